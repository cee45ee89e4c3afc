"""Batches with synthetic examples at ratio R, the study's definition.

R is the share of the synthetic class's examples in each batch that are synthetic; the batch's class
make-up stays that of the real training set at every R, so only the source of the synthetic class's
examples changes. R=0 is real only, R=100 has no real example of that class. Every batch has exactly
the planned composition, not just on average.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

__all__ = ["BatchPlan", "RatioBatchSampler", "plan_batches"]


@dataclass(frozen=True)
class BatchPlan:
    """Composition of every batch."""

    per_class: tuple[int, ...]  # examples of each class per batch; sums to the batch size
    synthetic: int  # of per_class[synthetic_label], how many are synthetic


def plan_batches(labels: np.ndarray, batch_size: int, synthetic_label: int, ratio: int) -> BatchPlan:
    """Per-class counts proportional to the real class frequencies (largest remainder, at least 1 per
    class), and round(ratio% of the synthetic class's count) synthetic, halves rounded up."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or labels.min() < 0:
        raise ValueError(f"labels: expected a non-empty 1-D array of class indices >= 0, got shape {labels.shape}")
    counts = np.bincount(labels)
    if not 0 <= synthetic_label < len(counts):
        raise ValueError(f"synthetic_label={synthetic_label}; labels hold classes 0..{len(counts) - 1}")
    if not 0 <= ratio <= 100:
        raise ValueError(f"ratio={ratio}; expected a percent in 0..100")
    if batch_size < len(counts):
        raise ValueError(f"batch_size={batch_size}; at least one example per class needs >= {len(counts)}")
    if (counts == 0).any():
        raise ValueError(f"real training class counts {counts.tolist()}: every class needs at least one example")

    quota = batch_size * counts  # exact integer quotas over counts.sum()
    per_class = quota // counts.sum()
    remainder = quota % counts.sum()
    by_remainder = np.argsort(-remainder, kind="stable")
    per_class[by_remainder[: batch_size - per_class.sum()]] += 1
    for empty in np.flatnonzero(per_class == 0):  # a rare class still gets one, from the largest
        per_class[np.argmax(per_class)] -= 1
        per_class[empty] = 1

    synthetic = (ratio * int(per_class[synthetic_label]) + 50) // 100
    return BatchPlan(tuple(int(n) for n in per_class), synthetic)


class _Walk:
    """Draws from a pool in epoch-like passes: a fresh permutation per pass, no repeat within a pass."""

    def __init__(self, pool: np.ndarray, rng: np.random.Generator) -> None:
        self.pool = pool
        self.rng = rng
        self.order = pool[:0]

    def take(self, n: int) -> np.ndarray:
        parts = [self.order[:0]]
        while n > 0:
            if not len(self.order):
                self.order = self.rng.permutation(self.pool)
            parts.append(self.order[:n])
            n -= len(parts[-1])
            self.order = self.order[len(parts[-1]) :]
        return np.concatenate(parts)


class RatioBatchSampler:
    """Yields `steps` batches of indices into [real examples..., synthetic examples...] (synthetic k is
    len(labels) + k), each with exactly the composition of `plan_batches`. The same seed gives the same
    batches on every iteration."""

    def __init__(
        self,
        labels: np.ndarray,
        num_synthetic: int,
        synthetic_label: int,
        ratio: int,
        batch_size: int,
        steps: int,
        seed: int,
    ) -> None:
        if ratio > 0 and num_synthetic == 0:
            raise ValueError(f"ratio={ratio} needs synthetic examples, got num_synthetic={num_synthetic}")
        labels = np.asarray(labels)
        self.plan = plan_batches(labels, batch_size, synthetic_label, ratio)
        self.steps = steps
        self.seed = seed
        real = [np.flatnonzero(labels == c) for c in range(len(self.plan.per_class))]
        real_counts = list(self.plan.per_class)
        real_counts[synthetic_label] -= self.plan.synthetic
        synthetic = np.arange(len(labels), len(labels) + num_synthetic)
        self._pools = [*zip(real, real_counts), (synthetic, self.plan.synthetic)]

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        walks = [(_Walk(pool, rng), n) for pool, n in self._pools]
        for _ in range(self.steps):
            yield np.concatenate([walk.take(n) for walk, n in walks])
