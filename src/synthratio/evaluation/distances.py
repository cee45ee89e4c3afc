"""FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium"), KID (Binkowski et al. 2018, "Demystifying MMD GANs") and precision/recall/density/coverage
(manifold.py) between synthetic and held-out real scans, next to the real-vs-real floor that a perfect
generator would score with the same set sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cleanfid import fid

from synthratio.evaluation.manifold import MANIFOLD_KEYS, precision_recall_density_coverage

KID_SUBSETS = 100  # random subsets KID averages over (clean-fid's default)
DISTANCE_KEYS = ("fid", "kid", "fid_floor", "kid_floor", *MANIFOLD_KEYS, *(f"{key}_floor" for key in MANIFOLD_KEYS))


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


def split_real(n_real: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two disjoint halves of n_real shuffled real rows: the reference A (first n_real // 2)
    and the held-out rest B. feature_distances(seed) draws its halves as split_real(n, default_rng(seed))."""
    order = rng.permutation(n_real)
    half = n_real // 2
    return order[:half], order[half:]


def feature_distances(
    synthetic: np.ndarray, real: np.ndarray, kid_subset_size: int, seed: int = 0, nearest_k: int = 5
) -> dict[str, float]:
    """Synthetic-vs-real distances and the real-vs-real floor, in one feature space.

    The real rows are shuffled (seed) and split into disjoint halves A and B (split_real). A is the
    reference; the synthetic set (subsampled, seed) and B are cut to the same size n_compared =
    min(n_synthetic, |A|), so fid/kid and precision/recall/density/coverage (synthetic vs A) and their
    *_floor twins (B vs A) carry the same small-sample bias. When synthetic has fewer rows than |A|,
    n_compared < n_real_half says so. The k-NN metrics use nearest_k = min(nearest_k, n_compared - 1)
    neighbours, recorded as nearest_k.
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
    if nearest_k < 1:
        raise ValueError(f"nearest_k={nearest_k}; expected a neighbour count >= 1")
    rng = np.random.default_rng(seed)
    reference_rows, rest = split_real(len(real), rng)
    n_compared = min(len(synthetic), len(reference_rows))
    reference = real[reference_rows]
    held_out = real[rest[:n_compared]]
    chosen = synthetic[rng.choice(len(synthetic), size=n_compared, replace=False)]
    versus = distance_pair(chosen, reference, kid_subset_size, seed)
    floor = distance_pair(held_out, reference, kid_subset_size, seed)
    k = min(nearest_k, n_compared - 1)
    manifold = precision_recall_density_coverage(reference, chosen, k)
    manifold_floor = precision_recall_density_coverage(reference, held_out, k)
    return {
        "fid": versus.fid,
        "kid": versus.kid,
        "fid_floor": floor.fid,
        "kid_floor": floor.kid,
        **manifold,
        **{f"{key}_floor": value for key, value in manifold_floor.items()},
        "n_synthetic": len(synthetic),
        "n_real_half": len(reference_rows),
        "n_compared": n_compared,
        "nearest_k": k,
    }
