"""Batches with synthetic examples at ratio R.

Three modes, all with the batch's class make-up fixed by the class counts of the (full) real training set,
split over the batch by largest remainder:
- replace (the study's definition): R is the share of the synthetic class's slots that are synthetic,
  round(R% x slots) of them in every batch; R=0 is real only, R=100 has no real example of that class.
  R in 0..100. Below 100 every real example is still seen, only less often: R is exposure, not data.
- add: every batch holds the whole R=0 batch plus round(R% x the synthetic class's slots) synthetic
  examples on top (augmentation), so batches grow with R. R in 0..MAX_ADD_RATIO (200 = twice as many
  synthetic as real examples of the class).
- data: the synthetic examples given join the real ones of the class in one pool that fills the class's
  slots (a cohort's left-out scans replaced by synthetic ones: R is a share of the data, not of a batch),
  so a batch's synthetic count varies around the pool's share.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from synthratio.config import MIX_MODES, MixMode, max_ratio

__all__ = ["BatchPlan", "RatioBatchSampler", "plan_batches"]


@dataclass(frozen=True)
class BatchPlan:
    """Composition of every batch."""

    per_class: tuple[int, ...]  # examples of each class per batch, synthetic included; sums to the batch length
    synthetic: (
        int  # of per_class[synthetic_label], how many are synthetic in every batch (data mode: 0, they share the pool)
    )

    @property
    def size(self) -> int:
        """Examples per batch (batch_size in replace mode, more in add mode)."""
        return sum(self.per_class)


def plan_batches(
    labels: np.ndarray,
    *,
    batch_size: int,
    synthetic_label: int,
    ratio: int,
    mode: MixMode = "replace",
    class_counts: Sequence[int] | None = None,
) -> BatchPlan:
    """Per-class real slots proportional to `class_counts` (default: the counts of `labels`; largest
    remainder, at least 1 per class), and round(ratio% of the synthetic class's slots) synthetic, halves
    rounded up: replacing real ones (replace) or on top of them (add); none fixed in data mode."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or labels.min() < 0:
        raise ValueError(f"labels: expected a non-empty 1-D array of class indices >= 0, got shape {labels.shape}")
    if mode not in MIX_MODES:
        raise ValueError(f"mode={mode!r}; expected one of {list(MIX_MODES)}")
    counts = np.bincount(labels) if class_counts is None else np.asarray(class_counts, dtype=np.int64)
    if class_counts is not None and (
        len(counts) < labels.max() + 1 or (counts < np.bincount(labels, minlength=len(counts))).any()
    ):
        raise ValueError(f"class_counts={list(class_counts)} must cover every class of labels, at least as often")
    if not 0 <= synthetic_label < len(counts):
        raise ValueError(f"synthetic_label={synthetic_label}; labels hold classes 0..{len(counts) - 1}")
    top = max_ratio(mode)
    if not 0 <= ratio <= top:
        raise ValueError(f"ratio={ratio}; expected a percent in 0..{top} for mode {mode!r}")
    if batch_size < len(counts):
        raise ValueError(f"batch_size={batch_size}; at least one example per class needs >= {len(counts)}")
    present = np.bincount(labels, minlength=len(counts))
    if (present == 0).any():
        raise ValueError(f"real training class counts {present.tolist()}: every class needs at least one example")

    quota = batch_size * counts  # exact integer quotas over counts.sum()
    per_class = quota // counts.sum()
    remainder = quota % counts.sum()
    by_remainder = np.argsort(-remainder, kind="stable")
    per_class[by_remainder[: batch_size - per_class.sum()]] += 1
    for empty in np.flatnonzero(per_class == 0):  # a rare class still gets one, from the largest
        per_class[np.argmax(per_class)] -= 1
        per_class[empty] = 1

    synthetic = 0 if mode == "data" else (ratio * int(per_class[synthetic_label]) + 50) // 100
    if mode == "add":
        per_class[synthetic_label] += synthetic
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
    len(labels) + k), each with the composition of `plan_batches`. The same seed gives the same batches on
    every iteration. `class_counts` fixes the make-up when `labels` is a subsample (the scarce-data regime
    draws its few real examples of a class more often)."""

    def __init__(
        self,
        labels: np.ndarray,
        *,
        num_synthetic: int,
        synthetic_label: int,
        ratio: int,
        batch_size: int,
        steps: int,
        seed: int,
        mode: MixMode = "replace",
        class_counts: Sequence[int] | None = None,
    ) -> None:
        if ratio > 0 and num_synthetic == 0 and mode != "data":
            raise ValueError(f"ratio={ratio} needs synthetic examples, got num_synthetic={num_synthetic}")
        labels = np.asarray(labels)
        self.plan = plan_batches(
            labels,
            batch_size=batch_size,
            synthetic_label=synthetic_label,
            ratio=ratio,
            mode=mode,
            class_counts=class_counts,
        )
        self.steps = steps
        self.seed = seed
        real = [np.flatnonzero(labels == c) for c in range(len(self.plan.per_class))]
        real_counts = list(self.plan.per_class)
        real_counts[synthetic_label] -= self.plan.synthetic
        synthetic = np.arange(len(labels), len(labels) + num_synthetic)
        if mode == "data":  # synthetic examples stand in for left-out real ones in the class's own pool
            real[synthetic_label], synthetic = np.concatenate([real[synthetic_label], synthetic]), synthetic[:0]
        self._pools = [*zip(real, real_counts), (synthetic, self.plan.synthetic)]
        n_real = int((labels == synthetic_label).sum())
        per_slot = self.plan.per_class[synthetic_label]
        # expected share of the class's examples per batch that are synthetic (what R actually came out as)
        self.synthetic_share = (
            num_synthetic / (n_real + num_synthetic) if mode == "data" else self.plan.synthetic / per_slot
        )

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        walks = [(_Walk(pool, rng), n) for pool, n in self._pools]
        for _ in range(self.steps):
            yield np.concatenate([walk.take(n) for walk, n in walks])
