import dataclasses
from pathlib import Path

import pytest

from synthratio.config import FinetuneConfig, load_params

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_finetune() -> FinetuneConfig:
    """A 2-level UNet at 16 px: enough to exercise every code path in seconds."""
    return dataclasses.replace(
        load_params(REPO / "params.yaml").finetune,
        image_size=16,
        block_channels=(8, 16),
        train_timesteps=100,
        prediction_type="epsilon",
        steps=2,
        batch_size=4,
        learning_rate=1e-3,
        checkpoint_every=0,
        mixed_precision="no",
    )
