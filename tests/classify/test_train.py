import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from synthratio.classify.train import LabelledImages, TrainResult, predict_proba, train_classifier
from synthratio.config import ClassifierConfig

SIZE = 16
CPU = torch.device("cpu")


def toy(n: int, seed: int, cnv_share: float = 0.5) -> LabelledImages:
    """CNV (label 0) bright, NORMAL (label 1) dark, with pixel noise: separable by mean brightness."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) >= round(cnv_share * n)).astype(np.int64)
    mean = np.where(labels == 0, 170.0, 80.0)[:, None, None]
    return LabelledImages(np.clip(rng.normal(mean, 30, (n, SIZE, SIZE)), 0, 255).astype(np.uint8), labels)


def config(**changes) -> ClassifierConfig:
    base = {
        "arch": "simple_cnn",
        "image_size": SIZE,
        "batch_size": 8,
        "epochs": 3,
        "learning_rate": 3e-3,
        "weight_decay": 1e-4,
    }
    return ClassifierConfig(**{**base, **changes})


SYNTHETIC_CNV = toy(12, seed=2, cnv_share=1.0).images
CNV = np.zeros(len(SYNTHETIC_CNV), np.int64)  # the class of each synthetic CNV scan


def train(
    ratio: int = 50, synthetic: np.ndarray | None = SYNTHETIC_CNV, **changes
) -> tuple[TrainResult, LabelledImages]:
    train_split, val = toy(40, seed=0, cnv_share=0.6), toy(16, seed=1)
    result = train_classifier(
        train_split,
        val,
        config(**changes),
        seed=0,
        device=CPU,
        synthetic=synthetic,
        synthetic_labels=None if synthetic is None else np.zeros(len(synthetic), np.int64),
        synthetic_classes=[0],
        ratio=ratio,
    )
    return result, val


def test_learns_and_keeps_the_best_epoch(tmp_path):
    result, val = train()
    assert [list(h) for h in result.history] == [["train_loss", "val_loss", "val_accuracy"]] * 3
    assert not result.model.training
    assert all(t.is_contiguous() for t in result.model.state_dict().values())  # safetensors can save it
    best = result.history[result.best_epoch - 1]
    assert (best["val_accuracy"], -best["val_loss"]) == max((h["val_accuracy"], -h["val_loss"]) for h in result.history)
    assert best["val_accuracy"] == 1.0

    path = tmp_path / "val.npy"
    np.save(path, val.images)
    probs = predict_proba(result.model, np.load(path, mmap_mode="r"), CPU, batch_size=5)
    assert probs.shape == (16, 2) and np.allclose(probs.sum(axis=1), 1)
    assert log_loss(val.labels, probs) == pytest.approx(best["val_loss"])  # the best state was loaded


def test_synthetic_examples_are_what_the_cnv_class_learns_from_at_r100():
    """Synthetic "CNV" darker than NORMAL teaches darker = CNV: every bright real CNV is then missed."""
    very_dark = np.full_like(SYNTHETIC_CNV, 10)
    result, val = train(ratio=100, synthetic=very_dark, epochs=2)
    predicted = predict_proba(result.model, val.images, CPU).argmax(axis=1)
    assert (predicted[val.labels == 0] == 1).all()


def test_image_and_label_counts_must_match():
    with pytest.raises(ValueError, match="split has 3 images but 2 labels"):
        LabelledImages(np.zeros((3, SIZE, SIZE), np.uint8), np.zeros(2, np.int64))


def test_deterministic_for_a_seed():
    first, val = train(ratio=25, epochs=1)
    second, _ = train(ratio=25, epochs=1)
    np.testing.assert_array_equal(
        predict_proba(first.model, val.images, CPU), predict_proba(second.model, val.images, CPU)
    )


def test_resnet18_trains():
    result, _ = train(ratio=100, arch="resnet18", epochs=1, batch_size=20)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])


def test_logs_every_epoch_to_live():
    class Live:
        def __init__(self):
            self.steps: list[dict[str, float]] = [{}]

        def log_metric(self, name: str, value: float) -> None:
            self.steps[-1][name] = value

        def next_step(self) -> None:
            self.steps.append({})

    live = Live()
    result = train_classifier(toy(16, 0), toy(8, 1), config(epochs=2), seed=0, device=CPU, live=live)
    assert live.steps == [*result.history, {}]


def test_diverging_loss_names_the_step():
    with pytest.raises(FloatingPointError, match=r"at step \d+; try a lower classifier.learning_rate than 1e\+30"):
        train(learning_rate=1e30, epochs=1)


@pytest.mark.parametrize(
    ("ratio", "synthetic", "message"),
    [
        (
            50,
            np.zeros((4, SIZE + 1, SIZE), np.uint8),
            r"synthetic images have shape \(4, 17, 16\); classifier.image_size=16",
        ),
        (50, None, r"ratio=50 needs synthetic examples of class 0, got none"),
    ],
)
def test_bad_inputs_raise(ratio: int, synthetic: np.ndarray | None, message: str):
    with pytest.raises(ValueError, match=message):
        train(ratio=ratio, synthetic=synthetic)


@pytest.mark.parametrize(("labels", "message"), [(None, r"12 synthetic images but 0"), (CNV[:11], r"but 11 synthetic")])
def test_synthetic_labels_must_label_every_synthetic_scan(labels: np.ndarray | None, message: str):
    with pytest.raises(ValueError, match=message):
        train_classifier(
            toy(40, seed=0, cnv_share=0.6),
            toy(16, seed=1),
            config(),
            seed=0,
            device=CPU,
            synthetic=SYNTHETIC_CNV,
            synthetic_labels=labels,
            synthetic_classes=[0],
            ratio=50,
        )


def test_each_synthetic_scan_trains_as_its_own_class():
    """Both classes synthetic at R=100 (no real training scan in any batch): dark scans labelled CNV and bright
    ones NORMAL, the reverse of the real scans, teach the reverse, so every real val scan is missed."""
    synthetic = np.concatenate([np.full_like(SYNTHETIC_CNV, 10), np.full_like(SYNTHETIC_CNV, 240)])
    result = train_classifier(
        toy(40, seed=0, cnv_share=0.6),
        toy(16, seed=1),
        config(epochs=2),
        seed=0,
        device=CPU,
        synthetic=synthetic,
        synthetic_labels=np.repeat([0, 1], len(SYNTHETIC_CNV)),
        synthetic_classes=[0, 1],
        ratio=100,
    )
    val = toy(16, seed=1)
    assert result.synthetic_share == 1.0
    assert (predict_proba(result.model, val.images, CPU).argmax(axis=1) != val.labels).all()


def test_add_mode_and_class_counts_train_the_same_number_of_steps():
    """add: batches of 8 real + 4 synthetic CNV; class_counts of a larger set: its steps per epoch (40 -> 5)."""
    train_split, val = toy(20, seed=0, cnv_share=0.6), toy(16, seed=1)
    seen: list[int] = []
    model_forward = torch.nn.Module.__call__

    def spy(module, *args, **kwargs):
        if module.__class__.__name__ == "Classifier" and module.training:
            seen.append(len(args[0]))
        return model_forward(module, *args, **kwargs)

    torch.nn.Module.__call__ = spy
    try:
        train_classifier(
            train_split,
            val,
            config(epochs=1),
            seed=0,
            device=CPU,
            synthetic=SYNTHETIC_CNV,
            synthetic_labels=CNV,
            synthetic_classes=[0],
            ratio=100,
            mode="add",
            class_counts=[24, 16],
        )
    finally:
        torch.nn.Module.__call__ = model_forward
    assert seen == [8 + 5] * 5  # per batch: 5 CNV + 3 NORMAL real (24:16 of 8), then 5 synthetic CNV on top
