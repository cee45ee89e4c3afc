"""Two patient-disjoint halves of the held-out real scans: the real-vs-real floor, the memorization
threshold and the detector's val/test parts all compare one half with the other, and scans of one patient
are near-copies of each other, so a scan-level split would let a half find its own patients in the other."""

from __future__ import annotations

import numpy as np


def patient_halves(groups: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of two patient-disjoint parts: shuffled patients dealt to the first part until it holds
    about half of the rows, the rest to the second."""
    groups = np.asarray(groups)
    names, counts = np.unique(groups, return_counts=True)
    if len(names) < 2:
        raise ValueError(f"held-out real scans come from {len(names)} patient group(s); two halves need >= 2")
    order = rng.permutation(len(names))
    cut = int(np.searchsorted(np.cumsum(counts[order]), len(groups) / 2)) + 1
    cut = min(max(cut, 1), len(names) - 1)
    first = np.isin(groups, names[order[:cut]])
    return np.flatnonzero(first), np.flatnonzero(~first)
