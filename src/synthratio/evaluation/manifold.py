"""Fidelity and diversity as separate numbers, from k-nearest-neighbour balls in a feature space.

Precision and recall: Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for Assessing
Generative Models". Density and coverage: Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
Generative Models" (their reference code, clovaai/generative-evaluation-prdc, is what this follows; they
recommend k = 5). FID mixes both failures in one number: a generator that copies a few modes has high
precision and low recall; one that blurs every scan has low precision.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import pairwise_distances
from sklearn.neighbors import NearestNeighbors

MANIFOLD_KEYS = ("precision", "recall", "density", "coverage")


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row to its k-th nearest other row (the radius of its k-NN ball)."""
    distances, _ = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
    return distances[:, k]  # column 0 is the row itself


def precision_recall_density_coverage(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """The four metrics of fake (M, D) against real (N, D), with k-NN balls of radius knn_radii(., k).

    precision: share of fake rows inside some real ball (Kynkaanniemi et al. 2019, eq. 1-3);
    recall: share of real rows inside some fake ball (ibid.);
    density: mean over fake rows of (real balls containing it) / k, about 1 when fake matches real and
    above 1 when fakes crowd dense real regions (Naeem et al. 2020, eq. 5);
    coverage: share of real rows whose ball contains some fake row (ibid., eq. 6).
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"feature arrays of shapes {real.shape} (real) and {fake.shape} (fake); expected (N, D) and (M, D)"
        )
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(
            f"k={k} nearest neighbours with {len(real)} real and {len(fake)} fake rows; expected 1 <= k < both counts"
        )
    real_radii = knn_radii(real, k)
    fake_radii = knn_radii(fake, k)
    between = pairwise_distances(real, fake)  # (N, M)
    inside_real = between < real_radii[:, None]  # [i, j]: fake j lies in real i's ball
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((between < fake_radii[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((between.min(axis=1) < real_radii).mean()),
    }
