"""Memorization: synthetic scans that sit closer to a training scan than real unseen scans do.

Diffusion models can reproduce training images (Carlini et al. 2023, "Extracting Training Data from
Diffusion Models"; Somepalli et al. 2023, "Diffusion Art or Digital Forgery?"), and a synthetic medical scan
that copies a patient's is a privacy leak. A distance alone means little, so the yardstick is real: held-out
scans of other patients are never copies. Two figures come from each scan's distance to its nearest
training scan:

- the memorized share (descriptive): the share of synthetic scans nearer than the quantile q of held-out
  distances, beside the same share of held-out scans that did not set the threshold (about q);
- the copying test (calibrated): Meehan et al. 2020's data-copying statistic ("A Non-Parametric Test to
  Detect Data-Copying in Generative Models", AISTATS), P(synthetic distance < held-out distance), with its
  variance from a bootstrap over held-out patients, since a patient's scans are not independent.

Distances are Euclidean, in a feature space and in pixel space (uint8 values, at evaluate.pixel_size at most).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import t as student_t

CPU = torch.device("cpu")
CHUNK_BYTES = 64 * 2**20  # float64 bytes of one block of rows while searching nearest neighbours


@dataclass(frozen=True)
class Nearest:
    """Each query row's nearest reference row."""

    distance: np.ndarray  # (N,) Euclidean distance to it
    index: np.ndarray  # (N,) its row in the reference


def pixel_rows(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) scans as uint8 (N, H * W) rows (a view, no copy): their distance is the L2 norm of the
    pixel difference."""
    return np.ascontiguousarray(images).reshape(len(images), -1)


def _blocks(rows: np.ndarray, size: int, device: torch.device):
    """(first row, float64 tensor on `device`, squared norms) of consecutive blocks of `size` rows."""
    for start in range(0, len(rows), size):
        block = torch.from_numpy(np.array(rows[start : start + size])).to(
            device, torch.float64
        )  # a copy: inputs may be read-only
        yield start, block, torch.linalg.vector_norm(block, dim=1).square()  # no block-sized temporary


def nearest_rows(
    query: np.ndarray,
    reference: np.ndarray,
    *,
    device: torch.device = CPU,
    chunk_bytes: int = CHUNK_BYTES,
) -> Nearest:
    """Each query row's nearest reference row (Euclidean), exact, converting blocks to float64 on `device` one
    at a time (uint8 blocks travel to a GPU, 8x less than float64).

    Why not sklearn: it converts both whole arrays to float first, and pixel rows of the full Kermany CNV
    training set at 512 px are 10 GB as uint8 but 78 GB as float64. Here memory stays at the inputs plus a
    few blocks of `chunk_bytes`; float64 keeps |a|^2 + |b|^2 - 2ab exact for near-copies of 262k-pixel rows
    (float32 would lose ~1e3 of such a squared distance).
    """
    size = max(1, chunk_bytes // (8 * query.shape[1]))
    distance, index = np.empty(len(query)), np.empty(len(query), dtype=np.int64)
    for q_start, q, q_norm in _blocks(query, size, device):
        best = torch.full((len(q),), float("inf"), dtype=torch.float64, device=device)
        best_index = torch.zeros(len(q), dtype=torch.int64, device=device)
        for r_start, r, r_norm in _blocks(reference, size, device):
            value, where = (q_norm[:, None] + r_norm[None, :] - 2.0 * q @ r.T).min(1)
            better = value < best  # strict: a tie keeps the earlier reference row
            best, best_index = torch.where(better, value, best), torch.where(better, where + r_start, best_index)
        distance[q_start : q_start + len(q)] = best.clamp(min=0.0).sqrt().cpu().numpy()
        index[q_start : q_start + len(q)] = best_index.cpu().numpy()
    return Nearest(distance=distance, index=index)


@dataclass(frozen=True)
class Memorization:
    threshold: float  # quantile q of held-out real (reference half) to train nearest distances
    share: float  # share of synthetic rows at or below threshold
    share_floor: float  # the same share for held-out real rows that did not set the threshold (about q)
    nearest: Nearest  # each synthetic row's nearest training row
    real_distance: np.ndarray  # each real row's distance to its nearest training row: reference rows, then floor


def memorization(
    synthetic: np.ndarray,
    *,
    real_reference: np.ndarray,
    real_floor: np.ndarray,
    train: np.ndarray,
    quantile: float,
    device: torch.device = CPU,
) -> Memorization:
    """Memorized share of synthetic rows against the training rows, in one space (all (N, D) arrays), with the
    nearest-neighbour search on `device`.

    real_reference sets the threshold; real_floor (other held-out real rows, disjoint from it) shows what
    share an unseen real scan gets. Both shares are means over scans: a patient's scans make them noisier, not
    biased, so they compare as they are; whether a gap between them is copying is copying_test's to say, from
    real_distance and the real rows' patients.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile={quantile}; expected a fraction in (0, 1)")
    for name, rows in (
        ("synthetic", synthetic),
        ("real_reference", real_reference),
        ("real_floor", real_floor),
        ("train", train),
    ):
        if rows.ndim != 2 or len(rows) == 0 or rows.shape[1] != train.shape[1]:
            raise ValueError(f"{name} rows of shape {rows.shape}; expected (N >= 1, {train.shape[1]}) like train")
    # one pass over train
    found = nearest_rows(np.concatenate([real_reference, real_floor, synthetic]), train, device=device)
    floor_start, synthetic_start = len(real_reference), len(real_reference) + len(real_floor)
    threshold = float(np.quantile(found.distance[:floor_start], quantile))
    floor = found.distance[floor_start:synthetic_start]
    nearest = Nearest(distance=found.distance[synthetic_start:], index=found.index[synthetic_start:])
    return Memorization(
        threshold=threshold,
        share=float((nearest.distance <= threshold).mean()),
        share_floor=float((floor <= threshold).mean()),
        nearest=nearest,
        real_distance=found.distance[:synthetic_start],
    )


@dataclass(frozen=True)
class Copying:
    """The data-copying test of one space (copying_test)."""

    auroc: float  # P(synthetic distance < held-out distance), ties half: 0.5 = no copying, 1 = all nearer
    se: float  # its standard error over the bootstrap draws
    p: float  # one-sided p of "synthetic scans are no nearer to training scans than unseen real ones"
    draws: int  # bootstrap draws the standard error comes from


def _resample_counts(units: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws + 1, units) times each unit is drawn: row 0 once each (the data as they are), then `draws`
    resamples of `units` units with replacement (a bincount: numpy's multinomial is 6x slower here)."""
    picks = rng.integers(0, units, (draws, units)) + units * np.arange(draws)[:, None]
    counts = np.bincount(picks.ravel(), minlength=draws * units).reshape(draws, units)
    return np.vstack([np.ones(units, dtype=np.int64), counts])


def copying_test(
    synthetic_distance: np.ndarray,
    real_distance: np.ndarray,
    real_groups: np.ndarray,
    *,
    draws: int,
    seed: int,
) -> Copying:
    """Are synthetic scans nearer to their nearest training scan than held-out real scans (`real_groups`: each
    one's patient) are to theirs? (Meehan, Chaudhuri & Dasgupta 2020, "A Non-Parametric Test to Detect
    Data-Copying in Generative Models", AISTATS: their Z_U in a single cell; the per-cell version, which finds
    copying confined to one region of the space, is left out.)

    The statistic is Mann-Whitney's U / (m n) read as an AUROC, P(d_synthetic < d_real) with ties counted
    half. Meehan et al. standardise U with its null variance for independent samples; held-out scans come
    several per patient and are not independent, so here the standard error is the spread of `draws`
    bootstrap draws that resample real patients (each bringing all its scans) and, independently, synthetic
    scans (independent draws of the generator). p = P(T > (auroc - 0.5) / se), T Student's t with
    min(patients, synthetic scans) - 1 degrees of freedom, since a standard error from a few patients is
    itself noisy (the simulation of tests/evaluation/test_evaluation_calibration.py, 15 patients of 3 scans
    and no copying: p < 0.05 in 4.4 % of 2000 runs on the t, 5.4 % on the normal). With se 0 (every draw
    alike), p is 0 when auroc > 0.5, else 1.
    """
    synthetic_distance, real_distance = np.asarray(synthetic_distance), np.asarray(real_distance)
    if synthetic_distance.ndim != 1 or real_distance.ndim != 1:
        raise ValueError(
            f"distances of shapes {synthetic_distance.shape} (synthetic) and {real_distance.shape} (real); "
            "expected (N,) and (M,)"
        )
    if len(real_groups) != len(real_distance):
        raise ValueError(f"{len(real_groups)} patient groups for {len(real_distance)} real distances")
    _, cluster = np.unique(np.asarray(real_groups), return_inverse=True)
    m, n_patients = len(synthetic_distance), len(np.unique(cluster))
    if min(m, n_patients) < 2 or draws < 2:
        raise ValueError(
            f"{m} synthetic scans, {n_patients} real patients and draws={draws}; a standard error needs >= 2 of each"
        )
    rng = np.random.default_rng(seed)
    ordered = np.sort(synthetic_distance)
    # Each real scan's count of synthetic scans nearer than it (ties half) is read off cumulative counts of
    # the sorted synthetic distances: O(draws (m + n)), where comparing pairs would be O(draws m n).
    below, tied_or_below = (np.searchsorted(ordered, real_distance, side) for side in ("left", "right"))
    synthetic_counts = _resample_counts(m, draws, rng)  # in the order of `ordered`: resampling is exchangeable
    real_counts = _resample_counts(n_patients, draws, rng)[:, cluster]  # each scan drawn with its patient
    cumulative = np.concatenate([np.zeros((draws + 1, 1), dtype=np.int64), synthetic_counts.cumsum(axis=1)], axis=1)
    twice_nearer = cumulative[:, below] + cumulative[:, tied_or_below]
    auroc = np.einsum("ij,ij->i", real_counts, twice_nearer) / (2 * m * real_counts.sum(axis=1))
    se, excess = float(auroc[1:].std(ddof=1)), float(auroc[0]) - 0.5
    p = float(student_t.sf(excess / se, min(m, n_patients) - 1)) if se > 0 else float(excess <= 0)
    return Copying(auroc=float(auroc[0]), se=se, p=p, draws=draws)
