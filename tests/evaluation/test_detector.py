import types

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

import synthratio.evaluation.detector as detector_module
from synthratio.config import ClassifierConfig
from synthratio.evaluation.detector import (
    DETECTOR_BATCH_SIZE,
    DETECTOR_LEARNING_RATE,
    DETECTOR_WEIGHT_DECAY,
    REAL,
    SYNTHETIC,
    detect_synthetic,
    detector_splits,
    resize_scans,
)  # fmt: skip
from synthratio.inference import Runs, bootstrap, cluster_draws, interval

CPU = torch.device("cpu")
PAIRS = np.repeat(np.arange(10), 2)  # patient groups of 20 held-out scans, two per patient


def test_splits_are_balanced_and_patient_disjoint(scans):
    real_train, heldout, synthetic = scans(30, seed=0), scans(20, seed=1), scans(40, seed=2)
    groups = np.repeat(np.arange(10), 2)  # two scans per patient

    parts = detector_splits(real_train, heldout, groups, synthetic=synthetic, seed=0)
    train, val, test = parts.train, parts.val, parts.test

    for part in (train, val, test):
        assert (part.labels == REAL).sum() == (part.labels == SYNTHETIC).sum() > 0
    val_real = {row.tobytes() for row in val.images[val.labels == REAL]}
    test_real = {row.tobytes() for row in test.images[test.labels == REAL]}

    def patients(part: set[bytes]) -> set:
        return {g for g, image in zip(groups, heldout) if image.tobytes() in part}

    assert not patients(val_real) & patients(test_real)
    synthetic_parts = [{row.tobytes() for row in part.images[part.labels == SYNTHETIC]} for part in (train, val, test)]
    assert sum(map(len, synthetic_parts)) == len(set().union(*synthetic_parts))  # no synthetic scan in two parts
    assert (len(train.labels), len(val.labels), len(test.labels)) == (2 * 20, 2 * 10, 2 * 10)
    real_units = parts.test_units[test.labels == REAL]
    assert len(np.unique(real_units)) == 5  # ten test-half scans from five patients: five resampling units
    assert len(np.unique(parts.test_units[test.labels == SYNTHETIC])) == 10  # each synthetic scan its own


@pytest.mark.parametrize(("n_synthetic", "sizes"), [(24, (12, 6, 6)), (100, (30, 10, 10)), (44, (24, 10, 10))])
def test_val_and_test_take_as_many_synthetic_scans_as_real_ones_up_to_a_quarter_each(
    scans, n_synthetic: int, sizes: tuple
):
    """Held-out halves of 10 real scans; val and test get min(10, n/4) synthetic scans, train the rest, each part
    cut to its smaller side."""
    real_train, heldout, groups = scans(30, seed=0), scans(20, seed=1), np.repeat(np.arange(10), 2)
    parts = detector_splits(real_train, heldout, groups, synthetic=scans(n_synthetic, seed=2), seed=0)
    assert tuple((part.labels == SYNTHETIC).sum() for part in (parts.train, parts.val, parts.test)) == sizes
    assert tuple((part.labels == REAL).sum() for part in (parts.train, parts.val, parts.test)) == sizes
    assert parts.test.labels.dtype == np.int64 and (parts.test.labels[: sizes[2]] == REAL).all()
    assert len(parts.test_units) == 2 * sizes[2] and parts.test_units.max() + 1 == len(np.unique(parts.test_units))
    for part in (parts.train, parts.val, parts.test):  # drawn without replacement: no scan twice
        assert len({image.tobytes() for image in part.images}) == len(part.images)
    again = detector_splits(real_train, heldout, groups, synthetic=scans(n_synthetic, seed=2), seed=0)
    np.testing.assert_array_equal(again.test.images, parts.test.images)  # the seed fixes the parts


def test_a_part_without_real_or_synthetic_scans_is_named(scans):
    with pytest.raises(ValueError, match="detector val part has 10 real and 0 synthetic scans; needs both"):
        detector_splits(scans(30, seed=0), scans(20, seed=1), PAIRS, synthetic=scans(3, seed=2), seed=0)
    with pytest.raises(ValueError, match="detector train part has 0 real and 20 synthetic scans; needs both"):
        detector_splits(scans(0, seed=0), scans(20, seed=1), PAIRS, synthetic=scans(40, seed=2), seed=0)


def test_one_patient_group_is_refused(scans):
    with pytest.raises(ValueError, match="1 patient group"):
        detector_splits(scans(8, 0), scans(8, 1), np.zeros(8), synthetic=scans(8, 2), seed=0)


@pytest.mark.parametrize("shift", [0, 60])
def test_auroc_is_near_chance_for_the_same_distribution_and_high_for_a_fingerprint(scans, shift: int):
    """A grey-level offset beyond the training jitter (brightness +-0.1 = 25 levels) is a fingerprint. Without
    one, the AUROC sits near 0.5 on both sides (an inverted or leaking detector leaves that band) with an
    interval that contains 0.5: 48 real and 48 synthetic test scans, so chance spreads by about +-0.06."""
    synthetic = np.clip(scans(192, seed=2).astype(int) + shift, 0, 255).astype(np.uint8)
    result = detect_synthetic(
        scans(96, 0), scans(96, 1), np.arange(96) // 2, synthetic=synthetic, image_size=16, epochs=4, seed=0, device=CPU
    )
    assert (result.n_train, result.n_val, result.n_test) == (96, 48, 48) and isinstance(result.n_test, int)
    assert result.auroc_ci_low <= result.auroc <= result.auroc_ci_high
    if shift:
        assert result.auroc > 0.95 and result.auroc_ci_low > 0.9 and result.accuracy > 0.85
    else:
        assert 0.35 <= result.auroc <= 0.65 and result.auroc_ci_low < 0.5 < result.auroc_ci_high
        assert 0.3 <= result.accuracy <= 0.7
        assert result.auroc_ci_high - result.auroc_ci_low < 0.35
        # one seeded check against fixed numbers (CPU, one thread): 1000 resamples, 95 %
        assert (round(result.auroc, 4), round(result.auroc_ci_low, 4), round(result.auroc_ci_high, 4)) == (
            0.5234,
            0.4036,
            0.6476,
        )


def test_resize_scans_keeps_matching_sizes_and_resizes_others(scans):
    images = scans(3, seed=0)
    assert resize_scans(images, 16) is images or np.shares_memory(resize_scans(images, 16), images)
    assert resize_scans(images, 8).shape == (3, 8, 8) and resize_scans(images, 8).dtype == np.uint8
    lanczos = [np.asarray(Image.fromarray(image).resize((8, 8), Image.Resampling.LANCZOS)) for image in images]
    np.testing.assert_array_equal(resize_scans(images, 8), lanczos)  # as prepare resizes: no resampling fingerprint


def test_detector_trains_on_train_picks_on_val_and_scores_test_with_a_patient_interval(
    scans, monkeypatch: pytest.MonkeyPatch
):
    """With a stand-in for the CNN (fixed P(synthetic) per test scan), what detect_synthetic does around it:
    the resized train and val parts go to train_classifier with the detector's settings and no mixing
    arguments (a plain classifier), the test part to predict_proba, and the AUROC, accuracy
    (P > 0.5 is synthetic, so P = 0.5 counts as real) and interval (test patients and synthetic scans
    resampled, each class apart) come from its output."""
    calls = {}

    def fake_train(train, val, config, *, seed, device):
        calls.update(train=train, val=val, config=config, seed=seed, device=device)
        return types.SimpleNamespace(model="stand-in")

    def fake_predict(model, images, device):
        calls.update(model=model, test_images=images, predict_device=device)
        n = len(images) // 2  # real test scans first, then as many synthetic ones
        p = np.concatenate([np.where(np.arange(n) % 3 == 0, 0.5, np.linspace(0.1, 0.7, n)), np.linspace(0.3, 0.95, n)])
        return np.stack([1 - p, p], axis=1)

    monkeypatch.setattr(detector_module, "train_classifier", fake_train)
    monkeypatch.setattr(detector_module, "predict_proba", fake_predict)
    real_train, heldout, groups, synthetic = (
        scans(30, seed=0),
        scans(20, seed=1),
        np.repeat(np.arange(10), 2),
        scans(40, seed=2),
    )
    parts = detector_splits(
        resize_scans(real_train, 8), resize_scans(heldout, 8), groups, synthetic=resize_scans(synthetic, 8), seed=7
    )
    p = fake_predict(None, parts.test.images, CPU)[:, SYNTHETIC]
    is_synthetic = parts.test.labels == SYNTHETIC

    result = detect_synthetic(
        real_train, heldout, groups, synthetic=synthetic, image_size=8, epochs=3, seed=7, device=CPU
    )

    for name in ("train", "val"):
        np.testing.assert_array_equal(calls[name].images, getattr(parts, name).images)
        np.testing.assert_array_equal(calls[name].labels, getattr(parts, name).labels)
    np.testing.assert_array_equal(calls["test_images"], parts.test.images)
    assert calls["config"] == ClassifierConfig(
        arch="simple_cnn", image_size=8, batch_size=DETECTOR_BATCH_SIZE, epochs=3, learning_rate=DETECTOR_LEARNING_RATE,
        weight_decay=DETECTOR_WEIGHT_DECAY,
    )  # fmt: skip
    assert (calls["seed"], calls["device"], calls["model"], calls["predict_device"]) == (7, CPU, "stand-in", CPU)
    assert result.auroc == roc_auc_score(is_synthetic, p)
    assert result.accuracy == np.mean((p > 0.5) == is_synthetic) and (p[~is_synthetic] == 0.5).sum() == 4
    runs = Runs(
        probs=np.stack([1 - p, p], axis=1)[None],
        labels=parts.test.labels,
        patients=parts.test_units,
        positive=SYNTHETIC,
    )
    # the defaults: 1000 resamples, 95 %
    draws = cluster_draws(parts.test_units, n_seeds=1, resamples=1000, seed=7, strata=parts.test.labels)
    assert (result.auroc_ci_low, result.auroc_ci_high) == interval(bootstrap(runs, "auroc", draws), 0.95)
    assert [type(n) for n in (result.n_train, result.n_val, result.n_test)] == [int] * 3
    assert (result.n_train, result.n_val, result.n_test) == (20, 10, 10)

    narrow = detect_synthetic(
        real_train,
        heldout,
        groups,
        synthetic=synthetic,
        image_size=8,
        epochs=3,
        seed=7,
        device=CPU,
        bootstrap=200,
        confidence=0.5,
    )
    draws = cluster_draws(parts.test_units, n_seeds=1, resamples=200, seed=7, strata=parts.test.labels)
    assert (narrow.auroc_ci_low, narrow.auroc_ci_high) == interval(bootstrap(runs, "auroc", draws), 0.5)


def test_the_smallest_split_has_one_scan_per_side_in_val_and_test(scans):
    """Two held-out patients of one scan each: val and test hold one real and one synthetic scan, which is
    enough to score (a part is refused only when a side is empty)."""
    parts = detector_splits(scans(3, seed=0), scans(2, seed=1), np.array([5, 9]), synthetic=scans(8, seed=2), seed=0)
    assert [part.labels.tolist() for part in (parts.val, parts.test)] == [[REAL, SYNTHETIC]] * 2
    assert (parts.train.labels == SYNTHETIC).sum() == 3 and parts.test_units.tolist() == [0, 1]
