"""Everything metrics/synthetic/keep_<k>.detail.json says about a set of synthetic scans, against held-out real
scans:

- FID, KID and precision/recall/density/coverage in the domain feature space (a classifier trained on real
  training scans only) and, when its weights file is there, clean-fid's Inception; each next to its
  real-vs-real floor, compared one scan per held-out patient (distances.py, manifold.py);
- in domain features and in pixels (memorization.py): the memorized share beside its real floor (descriptive),
  the data-copying test (calibrated: its AUROC and one-sided p), and plots/memorization_keep_<k>.png;
- the held-out AUROC of a synthetic-vs-real detector (detector.py);
- the set sizes, and few_images when FID compares fewer than evaluate.min_images scans a side.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from cleanfid.features import build_feature_extractor

from synthratio.config import EvaluateConfig
from synthratio.data.prepared import ScanRows, load_prepared
from synthratio.evaluation.detector import detect_synthetic, resize_scans
from synthratio.evaluation.distances import DISTANCE_KEYS, feature_distances
from synthratio.evaluation.features import FeatureFn, file_features, inception_available, read_scans, write_png_folder
from synthratio.evaluation.halves import patient_halves
from synthratio.evaluation.memorization import Memorization, copying_test, memorization, pixel_rows
from synthratio.figures import save_memorization_grid

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealScans:
    """Real scans of the generator's class, uint8 (N, H, W) at the generator's size: arrays, or ScanRows of
    the prepared memory maps, which every step below reads a block at a time (writing PNGs, resizing), so
    memory does not grow with the 512-px scans of a class (10 GB of Kermany's CNV)."""

    heldout: np.ndarray | ScanRows  # evaluate.real_split: patients the generator and the encoder never saw
    heldout_groups: np.ndarray  # patient group of each held-out scan (keeps the detector's parts patient-disjoint)
    train: np.ndarray | ScanRows  # the generator's training scans (what memorization compares with)


def load_heldout(
    prepared: Path, heldout_split: str, size: int, *, label: int, train: np.ndarray | ScanRows
) -> RealScans:
    """The prepared held-out scans of class `label` at `size` px (unread ScanRows), with their patient groups
    from index.csv, beside `train`, the generator's training scans."""
    real = load_prepared(prepared, heldout_split, size)
    of_class = real.labels == label
    heldout = ScanRows(real.images, np.flatnonzero(of_class))
    return RealScans(heldout=heldout, heldout_groups=real.patients[of_class], train=train)


def _check_inputs(synthetic: np.ndarray, files: Sequence[Path], real: RealScans) -> None:
    if len(real.heldout) < 4 or len(real.train) < 1:
        raise ValueError(
            f"{len(real.heldout)} held-out and {len(real.train)} training real scans; expected >= 4 held-out "
            "(two halves of two) and >= 1 training scan"
        )
    for name, images in (("held-out", real.heldout), ("training", real.train)):
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(
                f"{name} real scans: {images.dtype} array of shape {images.shape}; expected uint8 (N, H, W)"
            )
    size = real.heldout.shape[1:]
    if synthetic.shape[1:] != size or real.train.shape[1:] != size:
        raise ValueError(
            f"synthetic scans are {synthetic.shape[2]}x{synthetic.shape[1]} px (e.g. {files[0]}), real held-out "
            f"{size[1]}x{size[0]} px, real training {real.train.shape[2]}x{real.train.shape[1]} px; pixel distances "
            "need one size (generate and load real scans at finetune.image_size)"
        )


def _distance_metrics(
    synthetic_files: Sequence[Path],
    real_files: Sequence[Path],
    groups: np.ndarray,
    spaces: dict[str, FeatureFn],
    *,
    device: torch.device,
    config: EvaluateConfig,
) -> tuple[dict[str, float | int], tuple[np.ndarray, np.ndarray]]:
    """{space}_{DISTANCE_KEYS} of every feature space, with the sizes feature_distances compared (the same in
    every space: n_synthetic, n_real_half, n_compared, n_compared_patients, nearest_k, floor_splits); and the
    domain space's (synthetic, held-out real) features, which memorization reuses."""
    metrics: dict[str, float | int] = {}
    computed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for space, fn in spaces.items():
        extract = partial(
            file_features,
            feature_fn=fn,
            device=device,
            batch_size=config.batch_size,
            workers=config.workers,
            inception_resize=space == "inception",
        )
        computed[space] = (
            extract(synthetic_files, name=f"{space} features, synthetic"),
            extract(real_files, name=f"{space} features, real"),
        )
        distances = feature_distances(
            *computed[space],
            groups,
            kid_subset_size=config.kid_subset_size,
            seed=config.seed,
            nearest_k=config.nearest_k,
            splits=config.floor_splits,
        )
        metrics.update({f"{space}_{key}": distances[key] for key in DISTANCE_KEYS})
    sizes = ("n_synthetic", "n_real_half", "n_compared", "n_compared_patients", "nearest_k", "floor_splits")
    metrics.update({key: distances[key] for key in sizes})
    return metrics, computed["domain"]


def _memorization_metrics(
    synthetic: np.ndarray,
    real: RealScans,
    domain: tuple[np.ndarray, np.ndarray],
    train_files: Sequence[Path],
    feature_fn: FeatureFn,
    *,
    device: torch.device,
    config: EvaluateConfig,
    plot: Path | None,
) -> dict[str, float | int]:
    """In domain features (space "features"; `domain`: the synthetic and held-out features, the training
    scans' extracted here) and in "pixels": memorized_share_{space}{,_floor} and memorized_threshold_{space}
    (descriptive), and the data-copying test over every held-out scan, copying_auroc_{space} (0.5: no
    copying), its bootstrap standard error copying_auroc_{space}_se and one-sided copying_p_{space}
    (memorization.copying_test); memorized_pixel_size and copying_draws (evaluate.bootstrap); the figure of
    the closest pairs to `plot` when given."""
    train_features = file_features(
        train_files,
        feature_fn,
        device,
        batch_size=config.batch_size,
        workers=config.workers,
        name="domain features, real training",
    )
    # the held-out halves of distances' first halving
    reference, floor = patient_halves(real.heldout_groups, np.random.default_rng([config.seed, 0]))
    real_groups = real.heldout_groups[np.concatenate([reference, floor])]  # in the order of real_distance
    # Pixel distances at a capped size: the exact search costs a multiply-add per pixel of every pair, and a
    # copy of a 512 px scan is as much a copy at 64 px (the threshold is calibrated at the same size).
    pixel_size = min(config.pixel_size, synthetic.shape[1])
    pixels = [pixel_rows(resize_scans(images, pixel_size)) for images in (synthetic, real.heldout, real.train)]
    metrics: dict[str, float | int] = {}
    copies: dict[str, Memorization] = {}
    for space, (fake, heldout, train) in {"features": (*domain, train_features), "pixels": pixels}.items():
        copies[space] = memorization(
            fake,
            real_reference=heldout[reference],
            real_floor=heldout[floor],
            train=train,
            quantile=config.memorization_quantile,
            device=device,
        )
        found = copies[space]
        copying = copying_test(
            found.nearest.distance, found.real_distance, real_groups, draws=config.bootstrap, seed=config.seed
        )
        metrics.update(
            {
                f"memorized_share_{space}": found.share,
                f"memorized_share_{space}_floor": found.share_floor,
                f"memorized_threshold_{space}": found.threshold,
                f"copying_auroc_{space}": copying.auroc,
                f"copying_auroc_{space}_se": copying.se,
                f"copying_p_{space}": copying.p,
            }
        )
    if plot is not None:
        save_memorization_grid(synthetic, real.train, copies, path=plot)
    metrics["memorized_pixel_size"], metrics["copying_draws"] = pixel_size, config.bootstrap
    return metrics


def _detector_metrics(
    synthetic: np.ndarray, real: RealScans, *, device: torch.device, config: EvaluateConfig, confidence: float
) -> dict[str, float | int]:
    """detector_{auroc,auroc_ci_low,auroc_ci_high,accuracy,n_train,n_val,n_test} (detector.py)."""
    detector = detect_synthetic(
        real.train,
        real.heldout,
        real.heldout_groups,
        synthetic=synthetic,
        image_size=config.detector_image_size,
        epochs=config.detector_epochs,
        seed=config.seed,
        device=device,
        bootstrap=config.bootstrap,
        confidence=confidence,
    )
    return {
        "detector_auroc": detector.auroc,
        "detector_auroc_ci_low": detector.auroc_ci_low,
        "detector_auroc_ci_high": detector.auroc_ci_high,
        "detector_accuracy": detector.accuracy,
        "detector_n_train": detector.n_train,
        "detector_n_val": detector.n_val,
        "detector_n_test": detector.n_test,
    }


def evaluate_synthetic(
    synthetic_files: Sequence[Path],
    real: RealScans,
    feature_fn: FeatureFn,
    *,
    device: torch.device,
    config: EvaluateConfig,
    workdir: Path,
    memorization_plot: Path | None = None,
    confidence: float = 0.95,
) -> dict[str, float | int | bool]:
    """Every figure of metrics/synthetic/keep_<k>.detail.json for the listed synthetic scans (see the module
    docstring), but keep and real_split, which the stage adds.

    The real scans are written as PNGs under workdir (a fresh folder the caller owns), so both sets pass
    through clean-fid's same reading path. Keys: {domain,inception}_{fid,kid,precision,recall,density,
    coverage} and their *_floor and *_floor_sd twins (inception_* only when
    inception_available(config.inception_weights));
    memorized_share_{features,pixels}{,_floor}, memorized_threshold_{features,pixels}, memorized_pixel_size;
    copying_auroc_{features,pixels}{,_se}, copying_p_{features,pixels}, copying_draws;
    detector_{auroc,auroc_ci_low,auroc_ci_high,accuracy,n_train,n_val,n_test}; n_synthetic, n_real, n_real_train,
    n_real_half, n_compared, n_compared_patients, nearest_k, floor_splits, inception, few_images. Bad input (no
    synthetic file, mixed sizes, too few real scans) raises before any model runs.
    """
    synthetic = read_scans(synthetic_files, "synthetic scans")
    _check_inputs(synthetic, synthetic_files, real)
    real_files = write_png_folder(real.heldout, workdir / "real")
    train_files = write_png_folder(real.train, workdir / "train")
    logger.info(
        "evaluating %d synthetic scans (%dx%d px) against %d held-out and %d training real scans on %s",
        len(synthetic),
        synthetic.shape[2],
        synthetic.shape[1],
        len(real.heldout),
        len(real.train),
        device,
    )

    spaces: dict[str, FeatureFn] = {"domain": feature_fn}
    use_inception = inception_available(config.inception_weights)
    if use_inception:
        spaces["inception"] = build_feature_extractor(mode="clean", device=device)
    # the detector last, as always: its training reseeds the global RNGs (classify.train.set_seed)
    distances, domain = _distance_metrics(
        synthetic_files, real_files, real.heldout_groups, spaces, device=device, config=config
    )
    memorized = _memorization_metrics(
        synthetic, real, domain, train_files, feature_fn, device=device, config=config, plot=memorization_plot
    )
    detector = _detector_metrics(synthetic, real, device=device, config=config, confidence=confidence)
    metrics: dict[str, float | int | bool] = {
        **distances,
        **memorized,
        **detector,
        "n_real": len(real.heldout),
        "n_real_train": len(real.train),
        "inception": use_inception,
        "few_images": distances["n_compared"] < config.min_images,
    }
    if metrics["few_images"]:
        logger.warning(
            "FID/KID compare sets of %d scans (from %d synthetic and %d real), fewer than evaluate.min_images=%d: "
            "FID is biased and unstable at this size",
            distances["n_compared"],
            distances["n_synthetic"],
            len(real.heldout),
            config.min_images,
        )
    return metrics
