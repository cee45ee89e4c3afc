"""A synthetic-scan detector: a small CNN trained to tell synthetic from real scans of one class, scored
by its AUROC on scans it never saw (0.5: indistinguishable, 1.0: every synthetic scan gives itself away).

This is the fingerprint that can make a classifier fed only synthetic examples of a class (R = 100%) learn
"synthetic" instead of the disease: a generator's traces (smoothed speckle, resampling, a colour cast) are
easier to learn than the lesion. Classifier two-sample tests: Lopez-Paz & Oquab 2017, "Revisiting
Classifier Two-Sample Tests".

Data, all of one class: the detector trains on the real *training* scans (the generator's data) against
a share of the synthetic scans, picks its epoch on one patient-disjoint half of the held-out real scans, and
is scored on the other half. Val and test get as many synthetic scans as real ones (at most a quarter of
the synthetic set each), train the rest; each part is balanced by subsampling its larger side. The AUROC's
interval resamples the test part's real patients (their scans are not independent) and synthetic scans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from synthratio.classify.train import LabelledImages, predict_proba, train_classifier
from synthratio.config import ClassifierConfig
from synthratio.data.prepared import ScanRows
from synthratio.evaluation.halves import patient_halves
from synthratio.inference import Runs, cluster_draws, interval
from synthratio.inference import bootstrap as inference_bootstrap

REAL, SYNTHETIC = 0, 1  # detector labels
DETECTOR_BATCH_SIZE = 32  # images per step
DETECTOR_LEARNING_RATE = 1e-3  # AdamW
DETECTOR_WEIGHT_DECAY = 1e-4  # AdamW


@dataclass(frozen=True)
class DetectorResult:
    auroc: float  # ROC AUC of P(synthetic) on the test part
    auroc_ci_low: float  # its interval from resampling test patients (real) and scans (synthetic)
    auroc_ci_high: float
    accuracy: float  # share of test scans classified right at P = 0.5
    n_train: int  # scans per side (real, synthetic) in each part
    n_val: int
    n_test: int


def resize_scans(images: np.ndarray | ScanRows, size: int) -> np.ndarray:
    """uint8 (N, H, W) scans at size x size (PIL Lanczos, as prepare resizes); unchanged when already so. Scans
    on disk (ScanRows) are read a block at a time: only the result, at `size`, is held whole."""
    if images.shape[1:] == (size, size):
        return np.asarray(images) if isinstance(images, np.ndarray) else np.stack(list(images))
    return np.stack(
        [np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS)) for image in images]
    )


def _balanced(
    real: np.ndarray, synthetic: np.ndarray, rng: np.random.Generator, part: str
) -> tuple[LabelledImages, np.ndarray, np.ndarray]:
    """A part with as many real as synthetic scans (the larger side subsampled), and the rows picked from
    each side."""
    n = min(len(real), len(synthetic))
    if n == 0:
        raise ValueError(f"detector {part} part has {len(real)} real and {len(synthetic)} synthetic scans; needs both")
    real_rows, synthetic_rows = (
        np.sort(rng.choice(len(images), size=n, replace=False)) for images in (real, synthetic)
    )
    images = np.concatenate([real[real_rows], synthetic[synthetic_rows]])
    scans = LabelledImages(images=images, labels=np.repeat(np.array([REAL, SYNTHETIC], dtype=np.int64), n))
    return scans, real_rows, synthetic_rows


@dataclass(frozen=True)
class DetectorParts:
    train: LabelledImages
    val: LabelledImages
    test: LabelledImages
    test_units: np.ndarray  # resampling unit of each test scan: its patient (real) or itself (synthetic)


def detector_splits(
    real_train: np.ndarray, real_heldout: np.ndarray, heldout_groups: np.ndarray, *, synthetic: np.ndarray, seed: int
) -> DetectorParts:
    """Balanced train, val and test parts, labels REAL / SYNTHETIC (see the module docstring)."""
    if len(heldout_groups) != len(real_heldout):
        raise ValueError(f"{len(heldout_groups)} patient groups for {len(real_heldout)} held-out real scans")
    rng = np.random.default_rng(seed)
    val_rows, test_rows = patient_halves(np.asarray(heldout_groups), rng)
    real_parts = (real_train, real_heldout[val_rows], real_heldout[test_rows])
    # as many synthetic scans as real ones in val and test (at most a quarter each), the rest to train
    n_val, n_test = (min(len(part), len(synthetic) // 4) for part in real_parts[1:])
    order = rng.permutation(len(synthetic))
    synthetic_parts = (
        synthetic[order[n_val + n_test :]],
        synthetic[order[:n_val]],
        synthetic[order[n_val : n_val + n_test]],
    )
    (train, _, _), (val, _, _), (test, test_real, test_synthetic) = (
        _balanced(r, s, rng, name) for r, s, name in zip(real_parts, synthetic_parts, ("train", "val", "test"))
    )
    groups = np.asarray(heldout_groups)[test_rows][test_real]
    _, units = np.unique(groups, return_inverse=True)
    return DetectorParts(train, val, test, np.concatenate([units, units.max() + 1 + np.arange(len(test_synthetic))]))


def detect_synthetic(
    real_train: np.ndarray,
    real_heldout: np.ndarray,
    heldout_groups: np.ndarray,
    *,
    synthetic: np.ndarray,
    image_size: int,
    epochs: int,
    seed: int,
    device: torch.device,
    bootstrap: int = 1000,
    confidence: float = 0.95,
) -> DetectorResult:
    """Train simple_cnn (classify.train.train_classifier) on synthetic vs real uint8 (N, H, W) scans of one
    class, resized alike to image_size; AUROC (with a `confidence` interval from `bootstrap` resamples of
    test patients and synthetic scans) and accuracy on the held-out test part."""
    parts = detector_splits(
        *(resize_scans(images, image_size) for images in (real_train, real_heldout)),
        heldout_groups,
        synthetic=resize_scans(synthetic, image_size),
        seed=seed,
    )
    train, val, test = parts.train, parts.val, parts.test
    config = ClassifierConfig(
        arch="simple_cnn",
        image_size=image_size,
        batch_size=DETECTOR_BATCH_SIZE,
        epochs=epochs,
        learning_rate=DETECTOR_LEARNING_RATE,
        weight_decay=DETECTOR_WEIGHT_DECAY,
    )
    result = train_classifier(train, val, config, seed=seed, device=device)  # a plain classifier: no mixing
    probs = predict_proba(result.model, test.images, device)
    p_synthetic = probs[:, SYNTHETIC]
    runs = Runs(probs=probs[None], labels=test.labels, patients=parts.test_units, positive=SYNTHETIC)
    draws = cluster_draws(parts.test_units, n_seeds=1, resamples=bootstrap, seed=seed, strata=test.labels)
    low, high = interval(inference_bootstrap(runs, "auroc", draws), confidence)
    return DetectorResult(
        auroc=float(roc_auc_score(test.labels == SYNTHETIC, p_synthetic)),
        auroc_ci_low=low,
        auroc_ci_high=high,
        accuracy=float(((p_synthetic > 0.5) == (test.labels == SYNTHETIC)).mean()),
        n_train=len(train.labels) // 2,
        n_val=len(val.labels) // 2,
        n_test=len(test.labels) // 2,
    )
