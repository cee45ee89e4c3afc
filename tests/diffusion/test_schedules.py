import dataclasses
import math

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from synthratio.config import BETA_SCHEDULES
from synthratio.diffusion.schedules import (
    LAPLACE_B,
    MAX_BETA,
    build_training_scheduler,
    laplace_betas,
    loss_weights,
    offset_noise,
    sample_timesteps,
)

SAMPLERS = [DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UniPCMultistepScheduler]


@pytest.fixture
def config(tiny_finetune):
    return dataclasses.replace(tiny_finetune, train_timesteps=1000, prediction_type="v_prediction")


def test_laplace_betas_are_valid_and_follow_the_paper():
    betas = laplace_betas(1000)
    assert betas.shape == (1000,)
    assert (betas > 0).all() and (betas <= MAX_BETA).all()
    alpha_bar = np.cumprod(1 - betas)
    assert (np.diff(alpha_bar) < 0).all()
    t = np.arange(1, 1001) / 1000
    inside = slice(0, 999)  # the last beta is capped (alpha_bar(1) = 0)
    log_snr = np.log(alpha_bar[inside] / (1 - alpha_bar[inside]))
    expected = -LAPLACE_B * np.sign(0.5 - t[inside]) * np.log(1 - 2 * np.abs(t[inside] - 0.5))
    np.testing.assert_allclose(log_snr, expected, atol=1e-9)
    assert alpha_bar[499] == pytest.approx(0.5)  # lambda(1/2) = mu = 0


def test_laplace_scheduler_uses_those_betas(config):
    scheduler = build_training_scheduler(dataclasses.replace(config, beta_schedule="laplace"))
    np.testing.assert_allclose(scheduler.betas.numpy(), laplace_betas(1000).astype(np.float32))


@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
def test_zero_terminal_snr_ends_at_pure_noise(config, schedule):
    scheduler = build_training_scheduler(dataclasses.replace(config, beta_schedule=schedule, zero_terminal_snr=True))
    plain = build_training_scheduler(dataclasses.replace(config, beta_schedule=schedule))
    assert scheduler.alphas_cumprod[-1] == 0
    assert plain.alphas_cumprod[-1] > 0
    assert (scheduler.alphas_cumprod.diff() < 0).all()


def test_scaled_linear_follows_stable_diffusion(config):
    scheduler = build_training_scheduler(dataclasses.replace(config, beta_schedule="scaled_linear"))
    assert scheduler.config.steps_offset == 1
    assert scheduler.config.clip_sample is False
    assert scheduler.betas[0].item() == pytest.approx(0.00085)
    assert scheduler.betas[-1].item() == pytest.approx(0.012)


@pytest.mark.parametrize("zero_terminal_snr", [False, True])
@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
def test_saved_scheduler_rebuilds_every_sampler(config, schedule, zero_terminal_snr, tmp_path):
    """The generate stage rebuilds its sampler from the saved config: the schedule must survive both steps."""
    setting = dataclasses.replace(config, beta_schedule=schedule, zero_terminal_snr=zero_terminal_snr)
    scheduler = build_training_scheduler(setting)
    scheduler.save_pretrained(tmp_path)
    loaded = DDPMScheduler.from_pretrained(tmp_path)
    assert torch.equal(loaded.alphas_cumprod, scheduler.alphas_cumprod)
    for sampler in SAMPLERS:
        rebuilt = sampler.from_config(loaded.config)
        # DPM-Solver, Euler and UniPC put 2**-24 instead of 0 at a zero terminal SNR
        torch.testing.assert_close(rebuilt.alphas_cumprod, scheduler.alphas_cumprod, atol=1e-6, rtol=0)


def _mid_share(timesteps: torch.Tensor, steps: int) -> float:
    return ((timesteps >= steps // 4) & (timesteps < 3 * steps // 4)).float().mean().item()


def test_logit_normal_concentrates_mid_range(config):
    n = 20_000
    uniform = sample_timesteps(n, config, torch.Generator().manual_seed(0))
    logit_normal = dataclasses.replace(config, timestep_sampling="logit_normal")
    logit = sample_timesteps(n, logit_normal, torch.Generator().manual_seed(0))
    for draws in (uniform, logit):
        assert draws.dtype == torch.long
        assert 0 <= draws.min() and draws.max() < 1000
    assert _mid_share(uniform, 1000) == pytest.approx(0.5, abs=0.02)
    # P(|u| < logit(3/4)) for u ~ N(0, 1)
    assert _mid_share(logit, 1000) == pytest.approx(math.erf(math.log(3) / math.sqrt(2)), abs=0.02)


def test_timesteps_repeat_with_the_seed(config):
    first = sample_timesteps(16, config, torch.Generator().manual_seed(3))
    assert torch.equal(first, sample_timesteps(16, config, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, sample_timesteps(16, config, torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_min_snr_weights_match_the_formula(config, prediction_type):
    config = dataclasses.replace(config, prediction_type=prediction_type, snr_gamma=5.0)
    scheduler = build_training_scheduler(config)
    timesteps = torch.tensor([0, 100, 400, 700, 999])
    alpha_bar = scheduler.alphas_cumprod[timesteps].double()
    snr = alpha_bar / (1 - alpha_bar)
    expected = snr.clamp(max=5.0) / (snr + 1 if prediction_type == "v_prediction" else snr)
    weights = loss_weights(scheduler, timesteps, config)
    torch.testing.assert_close(weights.double(), expected, rtol=1e-5, atol=1e-6)
    assert weights[0] < 1  # t = 0: SNR far above gamma, the easy step is damped
    low = snr[-1].item()  # t = T-1: SNR below gamma, epsilon keeps full weight, v gets snr / (snr + 1)
    assert weights[-1].item() == pytest.approx(1.0 if prediction_type == "epsilon" else low / (low + 1), rel=1e-4)


def test_no_snr_gamma_weighs_every_image_alike(config):
    weights = loss_weights(build_training_scheduler(config), torch.tensor([0, 500, 999]), config)
    assert torch.equal(weights, torch.ones(3))


def test_offset_noise_adds_one_constant_per_image_and_channel():
    noise = torch.randn(4000, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    assert offset_noise(noise, 0.0, torch.Generator()) is noise
    shifted = offset_noise(noise, 0.1, torch.Generator().manual_seed(1))
    added = shifted - noise
    assert torch.allclose(added, added[:, :, :1, :1].expand_as(added), atol=1e-6)
    assert added[:, :, 0, 0].std().item() == pytest.approx(0.1, rel=0.05)
