"""FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium"), KID (Binkowski et al. 2018, "Demystifying MMD GANs") and precision/recall/density/coverage
(manifold.py) between synthetic and held-out real scans, next to the real-vs-real floor that a perfect
generator would score with the same set sizes: two halves of the held-out scans with no patient in common,
over several halvings, the compared half taking one scan per patient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cleanfid import fid

from synthratio.evaluation.halves import one_scan_per_patient, patient_halves
from synthratio.evaluation.manifold import MANIFOLD_KEYS, precision_recall_density_coverage

KID_SUBSETS = 100  # random subsets KID averages over (clean-fid's default)
DISTANCE_KEYS = tuple(
    f"{key}{suffix}" for suffix in ("", "_floor", "_floor_sd") for key in ("fid", "kid", *MANIFOLD_KEYS)
)


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


def distance_pair(x: np.ndarray, y: np.ndarray, *, kid_subset_size: int, seed: int = 0) -> DistancePair:
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


def feature_distances(
    synthetic: np.ndarray,
    real: np.ndarray,
    groups: np.ndarray,
    *,
    kid_subset_size: int,
    seed: int = 0,
    nearest_k: int = 5,
    splits: int = 1,
) -> dict[str, float]:
    """Synthetic-vs-real distances and the real-vs-real floor, in one feature space, averaged over `splits`
    patient-disjoint halvings of the real rows (`groups`: each real row's patient).

    In halving j the real rows split into patient-disjoint halves A and B (patient_halves). A, all its
    scans, is the reference of both comparisons. B is compared as one randomly chosen scan each of
    n_compared of its patients (one_scan_per_patient), the synthetic set as n_compared of its scans: a
    synthetic scan is an independent draw, while a patient's scans are near-copies, so all of B's scans hold
    fewer independent rows than as many synthetic ones: with 3 scans a patient, a perfect generator scored
    below that floor in 93-99 % of simulated runs, and in about half of them against one scan per patient
    (tests/evaluation/test_evaluation_calibration.py). n_compared = min(n_synthetic, patients of B, |A|)
    over the halvings, so fid/kid and precision/recall/density/coverage (synthetic vs A) and their *_floor
    twins (B vs A) carry the same small-sample bias. Each key is the mean over halvings, each *_floor also
    comes with its standard deviation *_floor_sd (how far the floor moves with the halving). The k-NN
    metrics use nearest_k = min(nearest_k, n_compared - 1) neighbours, recorded as nearest_k;
    n_compared_patients counts the real patients a compared set holds (= n_compared, one scan each; each
    synthetic scan counts as its own patient).
    """
    if synthetic.ndim != 2 or real.ndim != 2 or synthetic.shape[1] != real.shape[1]:
        raise ValueError(
            f"feature arrays of shapes {synthetic.shape} (synthetic) and {real.shape} (real); "
            "expected (N, D) and (M, D)"
        )
    if len(real) < 4 or len(synthetic) < 2:
        raise ValueError(
            f"{len(synthetic)} synthetic and {len(real)} real feature rows; expected at least 2 synthetic and 4 real "
            "(real is split into two halves, and a covariance needs two rows)"
        )
    if len(groups) != len(real):
        raise ValueError(f"{len(groups)} patient groups for {len(real)} real feature rows")
    if nearest_k < 1 or splits < 1:
        raise ValueError(f"nearest_k={nearest_k}, splits={splits}; expected counts >= 1")
    groups = np.asarray(groups)
    halvings = [patient_halves(groups, np.random.default_rng([seed, j])) for j in range(splits)]
    n_compared = min(len(synthetic), *(min(len(a), len(np.unique(groups[b]))) for a, b in halvings))
    if n_compared < 2:
        raise ValueError(
            f"a patient-disjoint half holds {n_compared} patient(s); a covariance needs two (more held-out patients)"
        )
    k = min(nearest_k, n_compared - 1)
    versus, floor = [], []
    for j, (reference_rows, rest) in enumerate(halvings):
        rng = np.random.default_rng([seed, j, 1])
        reference = real[reference_rows]
        held_out = real[one_scan_per_patient(rest, groups, rng)[:n_compared]]
        chosen = synthetic[rng.choice(len(synthetic), size=n_compared, replace=False)]
        for out, candidate in ((versus, chosen), (floor, held_out)):
            pair = distance_pair(candidate, reference, kid_subset_size=kid_subset_size, seed=seed)
            out.append({"fid": pair.fid, "kid": pair.kid, **precision_recall_density_coverage(reference, candidate, k)})
    keys = versus[0].keys()
    return {
        **{key: float(np.mean([v[key] for v in versus])) for key in keys},
        **{f"{key}_floor": float(np.mean([f[key] for f in floor])) for key in keys},
        **{f"{key}_floor_sd": float(np.std([f[key] for f in floor], ddof=1)) if splits > 1 else 0.0 for key in keys},
        "n_synthetic": len(synthetic),
        "n_real_half": int(round(np.mean([len(a) for a, _ in halvings]))),
        "n_compared": n_compared,
        "n_compared_patients": n_compared,
        "nearest_k": k,
        "floor_splits": splits,
    }
