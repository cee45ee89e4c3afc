"""Memorization: synthetic scans that sit closer to a training scan than real unseen scans do.

Diffusion models can reproduce training images (Carlini et al. 2023, "Extracting Training Data from
Diffusion Models"; Somepalli et al. 2023, "Diffusion Art or Digital Forgery?"), and a synthetic medical scan
that copies a patient's is a privacy leak. A distance alone means little, so the yardstick is real: held-out
scans of other patients are never copies, and the quantile q of their nearest-training-scan distances is the
threshold (the data-copying idea of Meehan et al. 2020, "A Non-Parametric Test to Detect Data-Copying in
Generative Models"). An honest generator has about a share q of its scans below it; a copying one, more.
Distances are Euclidean, in a feature space and in pixel space (uint8 values, at evaluate.pixel_size at most).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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
    share an unseen real scan gets, so a synthetic share well above share_floor means copying.
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
    )
