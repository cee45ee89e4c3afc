import pytest

from synthratio.config import FinetuneConfig


@pytest.fixture(scope="session")
def tiny_finetune() -> FinetuneConfig:
    """A 2-level UNet at 16 px: enough to exercise every code path in seconds."""
    return FinetuneConfig(
        backend="pixel",
        target_class="CNV",
        image_size=16,
        block_channels=(8, 16),
        layers_per_block=1,
        train_timesteps=100,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="epsilon",
        steps=2,
        batch_size=4,
        learning_rate=1e-3,
        seed=0,
    )
