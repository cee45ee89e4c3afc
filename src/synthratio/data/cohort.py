"""Cohorts: the real training patients of the synthetic classes that one regime may see.

A regime `keep` keeps keep % of each synthetic class's training patients, and its generator and its
classifiers see exactly those (a generator trained on more patients would leak the held-back ones into the
scarce regime through its scans). The cohorts are nested: one seeded order of the patients, and cohort k
is its first round(k % of them), so the 25 % cohort lies inside the 50 % one and results move with the
amount of data, not with which patients were drawn. A held-back patient leaves with every scan, of any
class (Kermany ids can carry CNV and DRUSEN scans of one eye). The validation split is cut the same way: a
scarce regime chooses its epochs and curation threshold on as few patients as it trains on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthratio.config import Params
from synthratio.data.prepared import ScanRows, load_prepared


def cohort_patients(groups: np.ndarray, labels: np.ndarray, *, label: int, keep: int, subset_seed: int) -> np.ndarray:
    """The patient groups of class `label` in cohort `keep`: the first round(keep % of them) (at least one)
    in an order drawn from `subset_seed`."""
    if not 0 < keep <= 100:
        raise ValueError(f"keep={keep}; expected a percent of patients in 1..100")
    ids = np.unique(np.asarray(groups)[np.asarray(labels) == label])
    if len(ids) == 0:
        raise ValueError(f"no training patients of class {label}; a cohort needs at least one")
    order = np.random.default_rng(subset_seed).permutation(ids)
    return np.sort(order[: max(1, (keep * len(ids) + 50) // 100)])


def cohort_rows(
    groups: np.ndarray, labels: np.ndarray, *, label: int | Sequence[int], keep: int, subset_seed: int
) -> np.ndarray:
    """Rows of a split in cohort `keep`: every row but those of the patients a class in `label` (one or
    several) holds back, the patients with scans of that class outside its cohort_patients; their scans of
    other classes leave too."""
    groups, labels = np.asarray(groups), np.asarray(labels)
    held_back = [
        np.setdiff1d(
            groups[labels == one], cohort_patients(groups, labels, label=int(one), keep=keep, subset_seed=subset_seed)
        )
        for one in np.atleast_1d(label)
    ]
    return np.flatnonzero(~np.isin(groups, np.concatenate(held_back)))


@dataclass(frozen=True)
class TrainingScans:
    """The real scans of one split that a cohort sees, uint8 at one size."""

    images: ScanRows  # (N, size, size), read from the memory map when indexed or iterated
    labels: np.ndarray  # (N,) class indices
    patients: np.ndarray  # (N,) patient group of each scan
    class_counts: tuple[int, ...]  # scans per class in the whole split (training: what batches are made of)


def load_cohort(
    prepared: Path,
    size: int,
    *,
    num_classes: int,
    label: int | Sequence[int],
    keep: int,
    subset_seed: int,
    split: str = "train",
) -> TrainingScans:
    """The prepared scans of `split` at `size` px that cohort `keep` of class(es) `label` may see, unread
    (ScanRows of the memory map)."""
    train = load_prepared(prepared, split, size)
    labels, patients = train.labels, train.patients
    counts = tuple(int(n) for n in np.bincount(labels, minlength=num_classes))
    rows = cohort_rows(patients, labels, label=label, keep=keep, subset_seed=subset_seed)
    images = ScanRows(train.images, rows)
    return TrainingScans(images=images, labels=labels[rows], patients=patients[rows], class_counts=counts)


def cohort_of(params: Params, keep: int, *, size: int, split: str = "train") -> TrainingScans:
    """load_cohort as params.yaml sets it up: regime `keep` of each class of sweep.synthetic_class
    (finetune.target_class, the same classes) among prepare.classes, in the order sweep.subset_seed draws,
    of the training split or another (val: what the regime selects on)."""
    classes = params.prepare.classes
    return load_cohort(
        params.paths.prepared,
        size,
        num_classes=len(classes),
        label=[classes.index(name) for name in params.sweep.synthetic_classes],
        keep=keep,
        subset_seed=params.sweep.subset_seed,
        split=split,
    )
