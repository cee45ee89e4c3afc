"""FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium") and KID (Binkowski et al. 2018, "Demystifying MMD GANs") between synthetic and held-out
real scans, next to the real-vs-real floor that a perfect generator would score with the same set sizes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cleanfid import fid
from cleanfid.features import build_feature_extractor

from synthratio.evaluation.features import FeatureFn, folder_features, inception_available, write_png_folder

logger = logging.getLogger(__name__)

KID_SUBSETS = 100  # random subsets KID averages over (clean-fid's default)
DISTANCE_KEYS = ("fid", "kid", "fid_floor", "kid_floor")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017).

    Tr((S1 S2)^(1/2)) is taken as Tr((S1^(1/2) S2 S1^(1/2))^(1/2)) from symmetric eigendecompositions, whose
    eigenvalues are real and >= 0 even for the singular covariances of fewer images than feature
    dimensions. clean-fid's own frechet_distance uses scipy's sqrtm(disp=False), which fails on 1x1
    matrices in SciPy 1.17 and is removed in 1.18; it agrees with this one elsewhere (tested).
    """
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    tr_covmean = np.sqrt(np.linalg.eigvalsh(root1 @ sigma2 @ root1).clip(min=0)).sum()
    diff = np.atleast_1d(mu1 - mu2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


@dataclass(frozen=True)
class DistancePair:
    fid: float  # Frechet distance between Gaussians fitted to the two feature sets
    kid: float  # unbiased MMD^2 with the cubic polynomial kernel, averaged over subsets


def distance_pair(x: np.ndarray, y: np.ndarray, kid_subset_size: int, seed: int = 0) -> DistancePair:
    """FID and KID between feature sets x (N, D) and y (M, D).

    FID: frechet_distance of the feature means and covariances. KID (Binkowski et al. 2018): clean-fid's
    kernel_distance over KID_SUBSETS subsets of min(kid_subset_size, N, M) rows each, since a subset cannot
    be larger than either set; its subsets are drawn from numpy's global RNG, which is seeded here and
    restored afterwards.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    fid_value = frechet_distance(x.mean(axis=0), np.cov(x, rowvar=False), y.mean(axis=0), np.cov(y, rowvar=False))
    subset = min(kid_subset_size, len(x), len(y))
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        kid_value = fid.kernel_distance(x, y, num_subsets=KID_SUBSETS, max_subset_size=subset)
    finally:
        np.random.set_state(state)
    return DistancePair(fid=fid_value, kid=kid_value)


def feature_distances(synthetic: np.ndarray, real: np.ndarray, kid_subset_size: int, seed: int = 0) -> dict[str, float]:
    """Synthetic-vs-real distances and the real-vs-real floor, in one feature space.

    The real rows are shuffled (seed) and split into disjoint halves A and B. A is the reference; the
    synthetic set (subsampled, seed) and B are cut to the same size n_compared = min(n_synthetic, |A|), so
    fid/kid (synthetic vs A) and fid_floor/kid_floor (B vs A) carry the same small-sample bias. When
    synthetic has fewer rows than |A|, n_compared < n_real_half says so.
    """
    if synthetic.ndim != 2 or real.ndim != 2 or synthetic.shape[1] != real.shape[1]:
        raise ValueError(
            f"feature arrays of shapes {synthetic.shape} (synthetic) and {real.shape} (real); expected (N, D) and (M, D)"
        )
    if len(real) < 4 or len(synthetic) < 2:
        raise ValueError(
            f"{len(synthetic)} synthetic and {len(real)} real feature rows; expected at least 2 synthetic and 4 real "
            "(real is split into two halves, and a covariance needs two rows)"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(real))
    half = len(real) // 2
    n_compared = min(len(synthetic), half)
    reference = real[order[:half]]
    held_out = real[order[half : half + n_compared]]
    chosen = synthetic[rng.choice(len(synthetic), size=n_compared, replace=False)]
    versus = distance_pair(chosen, reference, kid_subset_size, seed)
    floor = distance_pair(held_out, reference, kid_subset_size, seed)
    return {
        "fid": versus.fid,
        "kid": versus.kid,
        "fid_floor": floor.fid,
        "kid_floor": floor.kid,
        "n_synthetic": len(synthetic),
        "n_real_half": half,
        "n_compared": n_compared,
    }


def evaluate_synthetic(
    synthetic_dir: Path,
    real_images: np.ndarray,
    feature_fn: FeatureFn,
    device: torch.device,
    min_images: int,
    kid_subset_size: int,
    inception_weights: Path | None,
    workdir: Path,
) -> dict[str, float | int | bool]:
    """All distances for metrics/synthetic.json between the scans in synthetic_dir and real_images.

    real_images, uint8 (N, H, W) held-out real scans, are written as PNGs under workdir (a fresh folder the
    caller owns) so both sets pass through clean-fid's same reading path. Keys: domain_{fid,kid,fid_floor,
    kid_floor} in feature_fn's space; inception_{...} in clean-fid's Inception (clean mode) when
    inception_available(inception_weights); counts n_synthetic, n_real, n_real_half, n_compared; the flag
    inception; few_images, True (and a warning) when the compared sets hold fewer than min_images each,
    where FID is strongly biased and unstable.
    """
    real_dir = workdir / "real"
    write_png_folder(real_images, real_dir)
    spaces: dict[str, FeatureFn] = {"domain": feature_fn}
    use_inception = inception_available(inception_weights)
    if use_inception:
        spaces["inception"] = build_feature_extractor(mode="clean", device=device)
    metrics: dict[str, float | int | bool] = {}
    for space, fn in spaces.items():
        resize = space == "inception"
        synthetic = folder_features(synthetic_dir, fn, device, inception_resize=resize)
        real = folder_features(real_dir, fn, device, inception_resize=resize)
        distances = feature_distances(synthetic, real, kid_subset_size)
        metrics.update({f"{space}_{key}": distances[key] for key in DISTANCE_KEYS})
    metrics.update(
        n_synthetic=distances["n_synthetic"],
        n_real=len(real_images),
        n_real_half=distances["n_real_half"],
        n_compared=distances["n_compared"],
        inception=use_inception,
        few_images=distances["n_compared"] < min_images,
    )
    if metrics["few_images"]:
        logger.warning(
            "FID/KID compare sets of %d scans (from %d synthetic and %d real), fewer than evaluate.min_images=%d: "
            "FID is biased and unstable at this size",
            distances["n_compared"], distances["n_synthetic"], len(real_images), min_images,
        )
    return metrics
