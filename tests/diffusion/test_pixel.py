import dataclasses

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler

from synthratio.config import FinetuneConfig
from synthratio.diffusion.pixel import build_training_scheduler, build_unet, save_pipeline, train_pixel

CPU = torch.device("cpu")


@pytest.fixture
def config(tiny_finetune) -> FinetuneConfig:
    return tiny_finetune


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (8, 16, 16), dtype=np.uint8)


def test_unet_keeps_shape(config):
    unet = build_unet(config)
    out = unet(torch.zeros(2, 1, 16, 16), torch.tensor([0, 99])).sample
    assert out.shape == (2, 1, 16, 16)


def test_unet_init_is_seeded(config):
    first, second = build_unet(config), build_unet(config)
    other = build_unet(dataclasses.replace(config, seed=1))
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), other.parameters()))


def test_training_scheduler_follows_config(config):
    scheduler = build_training_scheduler(dataclasses.replace(config, prediction_type="v_prediction"))
    assert isinstance(scheduler, DDPMScheduler)
    assert scheduler.config.num_train_timesteps == 100
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.clip_sample is False


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_training_runs(config, images, prediction_type):
    result = train_pixel(images, dataclasses.replace(config, prediction_type=prediction_type), CPU, progress=False)
    assert isinstance(result.pipeline, DDPMPipeline)
    assert len(result.losses) == config.steps
    assert np.isfinite(result.losses).all()
    assert result.images_per_second > 0


def test_training_is_seeded(config, images):
    """Fixed numbers: a change to the draws, the init or the loss shows up here."""
    first = train_pixel(images, config, CPU, progress=False).losses
    again = train_pixel(images, config, CPU, progress=False).losses
    assert first == again
    assert first == pytest.approx([1.1715, 1.1286], abs=1e-3)


def test_training_logs_loss_per_step(config, images):
    class FakeLive:
        def __init__(self):
            self.logged, self.steps = [], 0

        def log_metric(self, name, value):
            self.logged.append((name, value))

        def next_step(self):
            self.steps += 1

    live = FakeLive()
    result = train_pixel(images, config, CPU, live=live, progress=False)
    assert live.logged == [("loss", loss) for loss in result.losses]
    assert live.steps == config.steps


@pytest.mark.parametrize(
    "bad",
    [np.zeros((8, 32, 32), np.uint8), np.zeros((8, 1, 16, 16), np.uint8), np.zeros((8, 16, 16), np.float32)],
    ids=["size", "channels", "dtype"],
)
def test_wrong_images_raise_naming_shape(config, bad):
    with pytest.raises(ValueError, match=str(bad.shape).replace("(", r"\(").replace(")", r"\)")):
        train_pixel(bad, config, CPU, progress=False)


def test_no_images_raise(config):
    with pytest.raises(ValueError, match="no training images"):
        train_pixel(np.zeros((0, 16, 16), np.uint8), config, CPU, progress=False)


def test_diverging_loss_raises(config, images, monkeypatch):
    monkeypatch.setattr(torch.nn.functional, "mse_loss", lambda *args: torch.tensor(float("nan"), requires_grad=True))
    with pytest.raises(FloatingPointError, match="step 0.*learning_rate"):
        train_pixel(images, config, CPU, progress=False)


def test_save_load_round_trip(config, images, tmp_path):
    pipeline = train_pixel(images, config, CPU, progress=False).pipeline
    out = tmp_path / "model"
    save_pipeline(pipeline, out)
    save_pipeline(pipeline, out)  # replaces an existing folder
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    loaded = DDPMPipeline.from_pretrained(out)
    saved, restored = pipeline.unet.state_dict(), loaded.unet.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[key], restored[key]) for key in saved)
    assert loaded.scheduler.config.beta_schedule == config.beta_schedule
