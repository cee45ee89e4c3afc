"""On real scans (../shared/kermany-sample), each way of failing scores clearly worse on the metric meant to
catch it, while a second set of real scans sits at the real-vs-real floor.

Split of the sample's CNV scans (one patient each), seeded: 100 "generator training" scans, 75 held-out
real scans that the metrics compare against, and 75 more that play the candidate sets:
  (a) the 75 as they are: real vs real, must sit at the floor;
  (b) blurred (Gaussian, sigma 1 px at 64 px) and (c) speckle removed (3x3 median filter): FID, recall and
      coverage worse, and the detector finds them; precision does not drop (smoothed scans sit inside the
      real k-NN balls), and pixel-space memorization rises (smooth scans are nearer everything in L2);
  (d) 75 training scans copied with +-2 grey levels of noise: memorized share near 1, copying test p near 0.
The domain encoder is simple_cnn trained on training CNV vs NORMAL scans of the sample (64 px).
Run with -s to see the table of every number.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from synthratio.classify.train import LabelledImages, train_classifier
from synthratio.config import ClassifierConfig, EvaluateConfig
from synthratio.data.ingest import decode_scan
from synthratio.evaluation.evaluate import RealScans, evaluate_synthetic
from synthratio.evaluation.features import classifier_feature_fn, write_png_folder

CPU = torch.device("cpu")
SIZE = 64  # px: the "generator's" size here
N_TRAIN, N_HELDOUT = 100, 75  # CNV scans: generator training set, held-out reference (the rest: candidates)
CONFIG = EvaluateConfig(
    encoder_seed=0, real_split="val", min_images=30, inception_weights=None, kid_subset_size=30, nearest_k=5,
    floor_splits=5, memorization_quantile=0.05, pixel_size=SIZE, detector_epochs=8, detector_image_size=SIZE,
    bootstrap=200, seed=0, batch_size=64, workers=0,
)  # fmt: skip
SHOWN = (
    "domain_fid", "domain_fid_floor", "domain_fid_floor_sd", "domain_precision", "domain_precision_floor",
    "domain_recall", "domain_coverage", "domain_density", "memorized_share_features", "memorized_share_pixels",
    "memorized_share_pixels_floor", "copying_auroc_features", "copying_auroc_pixels", "copying_p_features",
    "copying_p_pixels", "detector_auroc",
)  # fmt: skip


def _decode(sample: Path, cls: str) -> tuple[np.ndarray, np.ndarray]:
    manifest = pd.read_csv(sample / "MANIFEST.csv")
    rows = manifest[manifest["class"] == cls].sort_values("path")
    images = np.stack([decode_scan(sample / path, (SIZE,), mask=True).resized[SIZE] for path in rows["path"]])
    return images, rows["patient_id"].to_numpy()


def _encoder(cnv_train: np.ndarray, normal: np.ndarray) -> torch.nn.Module:
    """simple_cnn, CNV (0) vs NORMAL (1), trained on training scans only; a quarter of them select the epoch."""
    images = np.concatenate([cnv_train, normal])
    labels = np.repeat(np.array([0, 1]), [len(cnv_train), len(normal)])
    val = np.random.default_rng(1).random(len(images)) < 0.25
    config = ClassifierConfig(
        arch="simple_cnn", image_size=SIZE, batch_size=32, epochs=8, learning_rate=1e-3, weight_decay=1e-4
    )
    train, held = LabelledImages(images[~val], labels[~val]), LabelledImages(images[val], labels[val])
    result = train_classifier(train, held, config, seed=0, device=CPU)
    return result.model


@pytest.fixture
def scores(kermany_sample: Path) -> dict[str, dict]:
    return _scores(kermany_sample)


@functools.cache  # once per session: kermany_sample, the conftest fixture, is function-scoped
def _scores(kermany_sample: Path) -> dict[str, dict]:
    cnv, patients = _decode(kermany_sample, "CNV")
    normal, _ = _decode(kermany_sample, "NORMAL")
    order = np.random.default_rng(0).permutation(len(cnv))
    train, heldout, spare = np.split(order, [N_TRAIN, N_TRAIN + N_HELDOUT])
    real = RealScans(heldout=cnv[heldout], heldout_groups=patients[heldout], train=cnv[train])
    feature_fn = classifier_feature_fn(_encoder(cnv[train], normal[: len(normal) // 2]), SIZE, CPU)

    jitter = np.random.default_rng(2).integers(-2, 3, size=cnv[spare].shape)
    candidates = {
        "real (other half)": cnv[spare],
        "blurred": ndimage.gaussian_filter(cnv[spare].astype(np.float32), sigma=(0, 1, 1)),
        "speckle removed": ndimage.median_filter(cnv[spare], size=(1, 3, 3)),
        "copied training scans": cnv[train[: len(spare)]].astype(np.int16) + jitter,
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, images) in enumerate(candidates.items()):
            files = write_png_folder(np.clip(np.rint(images), 0, 255).astype(np.uint8), Path(tmp) / f"set{i}")
            workdir = Path(tmp) / f"work{i}"
            results[name] = evaluate_synthetic(files, real, feature_fn, device=CPU, config=CONFIG, workdir=workdir)
    print("\n| set | " + " | ".join(SHOWN) + " |\n|---|" + "---|" * len(SHOWN))
    for name, metrics in results.items():
        print(f"| {name} | " + " | ".join(f"{metrics[key]:.3f}" for key in SHOWN) + " |")
    return results


@pytest.mark.slow
def test_real_vs_real_sits_at_the_floor(scores: dict[str, dict]):
    real = scores["real (other half)"]
    # FID 0.82 against the floor's 0.54 (sd 0.09 over halvings); the candidates' subsample of an earlier draw
    # scored 0.71 against the same floor, and smoothed sets score 7x and 11x it
    assert real["domain_fid"] < 2 * real["domain_fid_floor"]
    assert real["domain_precision"] > 0.8 * real["domain_precision_floor"]
    assert real["memorized_share_pixels"] <= 0.15 and real["memorized_share_features"] <= 0.15
    assert min(real["copying_p_pixels"], real["copying_p_features"]) > 0.01  # measured 0.05 and 0.20
    assert real["detector_auroc"] < 0.75


@pytest.mark.slow
@pytest.mark.parametrize("degraded", ["blurred", "speckle removed"])
def test_smoothed_scans_score_worse_and_are_detected(scores: dict[str, dict], degraded: str):
    real, bad = scores["real (other half)"], scores[degraded]
    assert bad["domain_fid"] > 2 * real["domain_fid"]
    assert bad["detector_auroc"] > 0.9 > real["detector_auroc"]


@pytest.mark.slow
@pytest.mark.parametrize("degraded", ["blurred", "speckle removed"])
def test_smoothed_scans_lose_coverage_not_precision(scores: dict[str, dict], degraded: str):
    """Smoothed scans fall inside the real k-NN balls (precision stays high) but crowd together: recall and
    coverage (Naeem et al. 2020), not precision, are what drop."""
    real, bad = scores["real (other half)"], scores[degraded]
    assert bad["domain_coverage"] < real["domain_coverage"] - 0.4
    assert bad["domain_recall"] < real["domain_recall"] - 0.4
    assert bad["domain_precision"] > 0.9


@pytest.mark.slow
def test_copied_training_scans_are_memorized(scores: dict[str, dict]):
    real, copied = scores["real (other half)"], scores["copied training scans"]
    assert copied["memorized_share_pixels"] > 0.95 > 0.15 > real["memorized_share_pixels"]
    assert copied["memorized_share_features"] > 0.8
    assert max(copied["copying_p_pixels"], copied["copying_p_features"]) < 1e-3
    assert copied["copying_auroc_pixels"] > 0.99
    # FID cannot see copying: the copies sit near the patient-disjoint real-vs-real floor (measured 1.8x),
    # where a smoothed set lands far above it (7x and 12x)
    assert copied["domain_fid"] < 2.5 * copied["domain_fid_floor"]
    assert 3 * copied["domain_fid"] < min(scores["blurred"]["domain_fid"], scores["speckle removed"]["domain_fid"])
