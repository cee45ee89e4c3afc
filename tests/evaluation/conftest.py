"""Tiny scan-like images and a stand-in encoder shared by the evaluation tests."""

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from synthratio.evaluation.features import FeatureFn, classifier_feature_fn


class PoolEncoder(nn.Module):
    """Stand-in classifier whose embedding is the 4x4 average-pooled image."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def band_scans(n: int, seed: int, size: int = 16) -> np.ndarray:
    """Bright band on a dark background with per-image position jitter and speckle, uint8 (n, size, size)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(size)[None, :, None]
    centre = size / 2 + rng.normal(0, 2, (n, 1, 1))
    band = 160 * np.exp(-((rows - centre) ** 2) / 8) + 40
    return np.clip(band + rng.normal(0, 20, (n, size, size)), 0, 255).astype(np.uint8)


@pytest.fixture
def scans() -> Callable[..., np.ndarray]:
    return band_scans


@pytest.fixture
def pool_features() -> FeatureFn:
    """classifier_feature_fn of PoolEncoder at 16 px on the CPU."""
    return classifier_feature_fn(PoolEncoder(), image_size=16, device=torch.device("cpu"))
