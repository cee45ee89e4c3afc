"""A synthetic-scan detector: a small CNN trained to tell synthetic from real scans of one class, scored
by its AUROC on scans it never saw (0.5: indistinguishable, 1.0: every synthetic scan gives itself away).

This is the fingerprint that can make a classifier fed only synthetic examples of a class (R = 100%) learn
"synthetic" instead of the disease: a generator's traces (smoothed speckle, resampling, a colour cast) are
easier to learn than the lesion. Classifier two-sample tests: Lopez-Paz & Oquab 2017, "Revisiting
Classifier Two-Sample Tests".

Data, all of one class: the detector trains on the real *training* scans (the generator's data) against
a share of the synthetic scans, picks its epoch on one patient-disjoint half of the held-out real scans, and
is scored on the other half. Val and test get as many synthetic scans as real ones (at most a quarter of
the synthetic set each), train the rest; each part is balanced by subsampling its larger side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from synthratio.classify.train import Split, predict_proba, train_classifier
from synthratio.config import ClassifierConfig

REAL, SYNTHETIC = 0, 1  # detector labels
DETECTOR_BATCH_SIZE = 32  # images per step
DETECTOR_LEARNING_RATE = 1e-3  # AdamW
DETECTOR_WEIGHT_DECAY = 1e-4  # AdamW


@dataclass(frozen=True)
class DetectorResult:
    auroc: float  # ROC AUC of P(synthetic) on the test part
    accuracy: float  # share of test scans classified right at P = 0.5
    n_train: int  # scans per side (real, synthetic) in each part
    n_val: int
    n_test: int


def resize_scans(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W) scans at size x size (PIL Lanczos, as prepare resizes); unchanged when already so."""
    if images.shape[1:] == (size, size):
        return np.asarray(images)
    return np.stack([np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS)) for image in images])


def _halves_by_group(groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two group-disjoint parts: shuffled groups dealt to the first part until it holds
    about half of the rows."""
    names, counts = np.unique(groups, return_counts=True)
    if len(names) < 2:
        raise ValueError(f"held-out real scans come from {len(names)} patient group(s); the detector needs >= 2 (val, test)")
    order = rng.permutation(len(names))
    cut = int(np.searchsorted(np.cumsum(counts[order]), len(groups) / 2)) + 1
    cut = min(max(cut, 1), len(names) - 1)
    first = np.isin(groups, names[order[:cut]])
    return np.flatnonzero(first), np.flatnonzero(~first)


def _balanced(real: np.ndarray, synthetic: np.ndarray, rng: np.random.Generator, part: str) -> Split:
    n = min(len(real), len(synthetic))
    if n == 0:
        raise ValueError(f"detector {part} part has {len(real)} real and {len(synthetic)} synthetic scans; needs both")
    pick = lambda images: images[np.sort(rng.choice(len(images), size=n, replace=False))]  # noqa: E731
    images = np.concatenate([pick(real), pick(synthetic)])
    return Split(images=images, labels=np.repeat(np.array([REAL, SYNTHETIC], dtype=np.int64), n))


def detector_splits(
    real_train: np.ndarray, real_heldout: np.ndarray, heldout_groups: np.ndarray, synthetic: np.ndarray, seed: int
) -> tuple[Split, Split, Split]:
    """Balanced (train, val, test) parts, labels REAL / SYNTHETIC (see the module docstring)."""
    if len(heldout_groups) != len(real_heldout):
        raise ValueError(f"{len(heldout_groups)} patient groups for {len(real_heldout)} held-out real scans")
    rng = np.random.default_rng(seed)
    val_rows, test_rows = _halves_by_group(np.asarray(heldout_groups), rng)
    real_parts = (real_train, real_heldout[val_rows], real_heldout[test_rows])
    # as many synthetic scans as real ones in val and test (at most a quarter each), the rest to train
    n_val, n_test = (min(len(part), len(synthetic) // 4) for part in real_parts[1:])
    order = rng.permutation(len(synthetic))
    synthetic_parts = (
        synthetic[order[n_val + n_test :]], synthetic[order[:n_val]], synthetic[order[n_val : n_val + n_test]]
    )
    names = ("train", "val", "test")
    return tuple(_balanced(r, s, rng, name) for r, s, name in zip(real_parts, synthetic_parts, names))


def detect_synthetic(
    real_train: np.ndarray,
    real_heldout: np.ndarray,
    heldout_groups: np.ndarray,
    synthetic: np.ndarray,
    image_size: int,
    epochs: int,
    seed: int,
    device: torch.device,
    progress: bool = False,
) -> DetectorResult:
    """Train simple_cnn (classify.train.train_classifier, R = 0) on synthetic vs real uint8 (N, H, W) scans
    of one class, resized alike to image_size; AUROC and accuracy on the held-out test part."""
    train, val, test = detector_splits(
        *(resize_scans(images, image_size) for images in (real_train, real_heldout)), heldout_groups,
        resize_scans(synthetic, image_size), seed,
    )  # fmt: skip
    config = ClassifierConfig(
        arch="simple_cnn", image_size=image_size, batch_size=DETECTOR_BATCH_SIZE, epochs=epochs,
        learning_rate=DETECTOR_LEARNING_RATE, weight_decay=DETECTOR_WEIGHT_DECAY,
    )  # fmt: skip
    result = train_classifier(train, val, None, SYNTHETIC, 0, config, seed, device, progress=progress)
    p_synthetic = predict_proba(result.model, test.images, device)[:, SYNTHETIC]
    return DetectorResult(
        auroc=float(roc_auc_score(test.labels == SYNTHETIC, p_synthetic)),
        accuracy=float(((p_synthetic > 0.5) == (test.labels == SYNTHETIC)).mean()),
        n_train=len(train.labels) // 2,
        n_val=len(val.labels) // 2,
        n_test=len(test.labels) // 2,
    )
