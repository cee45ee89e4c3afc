"""Batches with synthetic examples at ratio R.

Three modes, all with the batch's class make-up fixed by the class counts of the (full) real training set,
split over the batch by largest remainder:
- replace (the study's definition): R is the share of each synthetic class's slots that are synthetic,
  round(R% x slots) of them in every batch; R=0 is real only, R=100 has no real example of the synthetic
  classes. R in 0..100. Below 100 every real example is still seen, only less often: R is exposure, not data.
- add: every batch holds the whole R=0 batch plus round(R% x slots) synthetic examples of each synthetic
  class on top (augmentation), so batches grow with R. R in 0..MAX_ADD_RATIO (200 = twice as many
  synthetic as real examples of the class).
- data: the synthetic examples of a class join its real ones in one pool that fills the class's slots (a
  cohort's left-out scans replaced by synthetic ones: R is a share of the data, not of a batch), so a
  batch's synthetic count varies around the pool's share.
Every synthetic class takes the same R.
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
    # of each class's per_class, how many are synthetic in every batch: 0 for a class that is not synthetic,
    # 0 everywhere in data mode (the synthetic examples share the real pool)
    synthetic: tuple[int, ...]

    @property
    def size(self) -> int:
        """Examples per batch (batch_size in replace mode, more in add mode)."""
        return sum(self.per_class)


def plan_batches(
    labels: np.ndarray,
    *,
    batch_size: int,
    synthetic_labels: Sequence[int],
    ratio: int,
    mode: MixMode = "replace",
    class_counts: Sequence[int] | None = None,
) -> BatchPlan:
    """Per-class real slots proportional to `class_counts` (default: the counts of `labels`; largest
    remainder, at least 1 per class), and for each of the synthetic classes `synthetic_labels`,
    round(ratio% of its slots) synthetic, halves rounded up: replacing real ones (replace) or on top of them
    (add); none fixed in data mode. Without a synthetic class (ratio 0 only) the plan is real only."""
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
    classes = [int(c) for c in synthetic_labels]
    if len(set(classes)) != len(classes) or not all(0 <= c < len(counts) for c in classes):
        raise ValueError(f"synthetic classes {classes}; expected distinct classes of labels, 0..{len(counts) - 1}")
    if ratio > 0 and not classes:
        raise ValueError(f"ratio={ratio} needs one or more synthetic classes, got none")
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

    synthetic = np.zeros_like(per_class)
    if mode != "data":
        synthetic[classes] = (ratio * per_class[classes] + 50) // 100
    if mode == "add":
        per_class += synthetic
    return BatchPlan(tuple(int(n) for n in per_class), tuple(int(n) for n in synthetic))


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
    len(labels) + k, of class synthetic_labels[k]), each with the composition of `plan_batches`. The same seed
    gives the same batches on every iteration. `class_counts` fixes the make-up when `labels` is a subsample
    (the scarce-data regime draws its few real examples of a class more often)."""

    def __init__(
        self,
        labels: np.ndarray,
        *,
        synthetic_labels: np.ndarray,
        synthetic_classes: Sequence[int],
        ratio: int,
        batch_size: int,
        steps: int,
        seed: int,
        mode: MixMode = "replace",
        class_counts: Sequence[int] | None = None,
    ) -> None:
        labels, synthetic_labels = np.asarray(labels), np.asarray(synthetic_labels)
        self.plan = plan_batches(
            labels,
            batch_size=batch_size,
            synthetic_labels=synthetic_classes,
            ratio=ratio,
            mode=mode,
            class_counts=class_counts,
        )
        classes = [int(c) for c in synthetic_classes]
        stray = sorted(set(synthetic_labels.tolist()) - set(classes))
        if stray:
            raise ValueError(f"synthetic_labels hold classes {stray}; expected only the synthetic classes {classes}")
        synthetic = [len(labels) + np.flatnonzero(synthetic_labels == c) for c in classes]
        for c, pool in zip(classes, synthetic):
            if ratio > 0 and mode != "data" and not len(pool):
                raise ValueError(f"ratio={ratio} needs synthetic examples of class {c}, got none")
        self.steps = steps
        self.seed = seed
        real = [np.flatnonzero(labels == c) for c in range(len(self.plan.per_class))]
        if mode == "data":  # synthetic examples stand in for left-out real ones in their class's own pool
            for c, pool in zip(classes, synthetic):
                real[c] = np.concatenate([real[c], pool])
            n_synthetic = len(synthetic_labels)
            n_class = int(np.isin(labels, classes).sum()) + n_synthetic
        else:
            n_synthetic, n_class = sum(self.plan.synthetic), sum(self.plan.per_class[c] for c in classes)
        # expected share of the synthetic classes' examples per batch that are synthetic, pooled over the
        # classes (what R actually came out as); 0 for a plain classifier without synthetic classes
        self.synthetic_share = n_synthetic / n_class if n_class else 0.0
        real_counts = [n - k for n, k in zip(self.plan.per_class, self.plan.synthetic)]
        # real pools by class, then the synthetic ones in the order of synthetic_classes (asked for none in
        # data mode): with one synthetic class, the batches a seed gave before there could be several
        self._pools = [*zip(real, real_counts), *zip(synthetic, [self.plan.synthetic[c] for c in classes])]

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        walks = [(_Walk(pool, rng), n) for pool, n in self._pools]
        for _ in range(self.steps):
            yield np.concatenate([walk.take(n) for walk, n in walks])
