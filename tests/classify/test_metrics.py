import math

import numpy as np
import pytest

from synthratio.classify.metrics import classification_metrics, expected_calibration_error

CLASSES = ("CNV", "NORMAL")
# CNV is label 0; predictions (argmax) are CNV, CNV, NORMAL, NORMAL, CNV
LABELS = np.array([0, 0, 0, 1, 1])
P_CNV = np.array([0.9, 0.6, 0.3, 0.2, 0.7])
PROBS = np.stack([P_CNV, 1 - P_CNV], axis=1)


def test_binary_by_hand():
    metrics = classification_metrics(LABELS, PROBS, CLASSES)
    assert metrics == pytest.approx(
        {
            "accuracy": 3 / 5,
            "precision": 2 / 3,  # CNV predicted 3 times, right twice
            "recall": 2 / 3,  # 3 CNV, 2 found
            "f1": 2 / 3,
            "auroc": 4 / 6,  # of the 3 x 2 (CNV, NORMAL) pairs, 4 rank the CNV higher
            "log_loss": -(math.log(0.9) + math.log(0.6) + math.log(0.3) + math.log(0.8) + math.log(0.3)) / 5,
            # confidences .9 .6 .7 .8 .7, right, right, wrong, right, wrong: |.1| + |.4| + |-.7 - .7| + |.2|, over 5
            "ece": (0.1 + 0.4 + 1.4 + 0.2) / 5,
        }
    )
    assert all(type(v) is float for v in metrics.values())


def test_binary_follows_the_positive_class():
    metrics = classification_metrics(LABELS, PROBS, CLASSES, positive="NORMAL")
    assert (metrics["precision"], metrics["recall"], metrics["auroc"]) == pytest.approx((1 / 2, 1 / 2, 4 / 6))


def test_multiclass_macro_by_hand():
    labels = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.5, 0.4], [0.1, 0.2, 0.7]])
    metrics = classification_metrics(labels, probs, ("CNV", "DME", "NORMAL"))
    assert metrics["accuracy"] == pytest.approx(3 / 4)
    assert metrics["precision"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert metrics["recall"] == pytest.approx((1 + 1 + 1 / 2) / 3)
    assert metrics["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert metrics["auroc"] == pytest.approx(1.0)  # every class's positives outrank its negatives


def test_seeded_fixed_numbers():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    logits = rng.normal(size=(40, 2)) + 1.5 * np.eye(2)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = {
        "accuracy": 0.875,
        "f1": 0.857143,
        "precision": 0.833333,
        "recall": 0.882353,
        "auroc": 0.966752,
        "log_loss": 0.27859,
        "ece": 0.114941,
    }
    assert classification_metrics(labels, probs, CLASSES) == pytest.approx(expected, abs=1e-6)


def test_ece_is_zero_when_confidence_matches_accuracy_per_bin():
    # 10 scans at confidence 0.7 with 7 right, 2 at 1.0 both right: calibrated in each bin and overall
    probs = np.array([[0.7, 0.3]] * 10 + [[0.0, 1.0]] * 2)
    labels = np.array([0] * 7 + [1] * 3 + [1, 1])
    assert expected_calibration_error(labels, probs) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(labels, probs, bins=1) == pytest.approx(0.0, abs=1e-12)
    assert expected_calibration_error(labels[:10], probs[:10] * 0 + [1.0, 0.0]) == pytest.approx(
        0.3
    )  # 100% sure, 70% right
    with pytest.raises(ValueError, match="bins=0; expected a positive number"):
        expected_calibration_error(labels, probs, bins=0)


def test_single_class_labels_give_nan_auroc():
    assert math.isnan(classification_metrics(LABELS[:3], PROBS[:3], CLASSES)["auroc"])


@pytest.mark.parametrize(
    ("probs", "classes", "positive", "message"),
    [
        (PROBS[:4], CLASSES, "CNV", r"probs shape \(4, 2\); expected .* \(5, 2\)"),
        (PROBS, ("DME", "NORMAL"), "CNV", r"positive='CNV'; expected one of \['DME', 'NORMAL'\]"),
    ],
)
def test_bad_arguments_raise(probs: np.ndarray, classes: tuple[str, ...], positive: str, message: str):
    with pytest.raises(ValueError, match=message):
        classification_metrics(LABELS, probs, classes, positive=positive)
