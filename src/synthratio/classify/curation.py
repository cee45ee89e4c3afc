"""Curation of synthetic scans: keep those a real-only classifier calls their class about as surely as it
calls real scans of that class.

The judge is a classifier trained on real training scans only (an R=0 baseline seed) and the bar is a low
quantile of its probability of the class on that class's real validation scans, so no test scan takes part.
A synthetic scan below the bar looks less like the class than all but that share of real ones: a failed
sample (noise, no lesion, the wrong anatomy) that would teach the classifier a wrong label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from synthratio.classify.train import predict_proba

__all__ = ["Curation", "curate"]


@dataclass(frozen=True)
class Curation:
    """Which synthetic scans are kept, and the bar they cleared."""

    kept: tuple[int, ...]  # seeds of the kept scans, in the order given
    rejected: int  # scans below the bar
    threshold: float  # the classifier's p(class) a scan needs; 0 when curation is off

    def to_dict(self) -> dict[str, float | int]:
        return {
            "curation_kept": len(self.kept),
            "curation_rejected": self.rejected,
            "curation_threshold": round(self.threshold, 6),
        }


def curate(
    classifier: torch.nn.Module,
    synthetic: np.ndarray,
    seeds: Sequence[int],
    real: np.ndarray,
    *,
    label: int,
    quantile: float,
    device: torch.device,
) -> Curation:
    """Keep the uint8 (N, H, W) `synthetic` scans (one per seed) whose `classifier` probability of class
    `label` reaches the `quantile` of its probability on `real`, real validation scans of that class.

    Raises ValueError when no scan clears the bar: a sweep without synthetic scans answers nothing.
    """
    if len(synthetic) != len(seeds):
        raise ValueError(f"{len(synthetic)} synthetic scans for {len(seeds)} seeds; expected one scan per seed")
    if len(real) == 0:
        raise ValueError(f"no real validation scans of class {label} to set the curation bar; expected >= 1")
    threshold = float(np.quantile(predict_proba(classifier, real, device)[:, label], quantile))
    passed = predict_proba(classifier, synthetic, device)[:, label] >= threshold
    kept = tuple(int(seed) for seed, ok in zip(seeds, passed) if ok)
    if not kept:
        raise ValueError(
            f"curation rejected all {len(seeds)} synthetic scans: none reached p={threshold:.4f}, the "
            f"{quantile} quantile of the real validation scans' (lower curate.real_quantile or improve the generator)"
        )
    return Curation(kept=kept, rejected=len(seeds) - len(kept), threshold=threshold)
