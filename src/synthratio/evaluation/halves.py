"""Two patient-disjoint halves of the held-out real scans: the real-vs-real floor, the memorization
threshold and the detector's val/test parts all compare one half with the other, and scans of one patient
are near-copies of each other, so a scan-level split would let a half find its own patients in the other.
For the same reason a compared set takes one scan per patient: each synthetic scan is an independent draw,
and three near-copies of a patient are worth about one."""

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


def one_scan_per_patient(rows: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One randomly chosen row of each patient among `rows` (`groups`: every row's patient, indexed by row),
    the patients in random order: its first n rows are one scan each of n random patients."""
    shuffled = rng.permutation(np.asarray(rows))
    _, first = np.unique(np.asarray(groups)[shuffled], return_index=True)
    return shuffled[rng.permutation(first)]
