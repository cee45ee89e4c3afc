"""The training forward process: beta schedules, timestep draws, loss weights and offset noise.

Both backends train against a diffusers `DDPMScheduler` built here; its saved config is what the
generate stage rebuilds every sampler from, so every schedule must survive `save_pretrained` /
`from_pretrained` and `from_config` of each sampler: the Laplace and sigmoid schedules, which most
samplers cannot build from their name, travel as `trained_betas`.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DDPMScheduler
from diffusers.training_utils import compute_snr

from synthratio.config import FinetuneConfig

MAX_BETA = 0.999  # the cap diffusers puts on betas derived from alpha_bar (Nichol & Dhariwal 2021)
LAPLACE_MU = 0.0  # Hang et al. 2024, Laplace schedule: location of log-SNR
LAPLACE_B = 0.5  # Hang et al. 2024, Laplace schedule: scale of log-SNR
SCALED_LINEAR_BETAS = (0.00085, 0.012)  # Stable Diffusion's (beta_start, beta_end)
LINEAR_BETAS = (0.0001, 0.02)  # Ho et al. 2020


def laplace_betas(steps: int, mu: float = LAPLACE_MU, b: float = LAPLACE_B) -> np.ndarray:
    """Betas whose log-SNR follows a Laplace quantile function (Hang et al. 2024, "Improved Noise Schedule
    for Diffusion Training", eq. for lambda(t)): lambda(t) = mu - b * sign(0.5 - t) * ln(1 - 2|t - 0.5|).

    alpha_bar(t) = sigmoid(lambda(t)), taken at t = (i + 1) / steps, and beta_i = 1 - alpha_bar_i /
    alpha_bar_{i-1} (alpha_bar_{-1} = 1), capped at 0.999 like diffusers' `betas_for_alpha_bar`.
    (diffusers' own "laplace" option uses sqrt(sigmoid(lambda)) as alpha_bar; this follows the paper.)
    """
    t = np.arange(1, steps + 1, dtype=np.float64) / steps
    with np.errstate(divide="ignore"):  # t = 1 gives ln(0): lambda = -inf, alpha_bar = 0
        log_snr = mu - b * np.sign(0.5 - t) * np.log(1.0 - 2.0 * np.abs(t - 0.5))
    alpha_bar = 0.5 * (1.0 + np.tanh(0.5 * log_snr))  # sigmoid, finite at +-inf
    previous = np.concatenate([[1.0], alpha_bar[:-1]])
    return np.minimum(1.0 - alpha_bar / previous, MAX_BETA)


def build_training_scheduler(config: FinetuneConfig) -> DDPMScheduler:
    """The forward process q(x_t | x_0) of Ho et al. 2020 with `config`'s T, betas and prediction target.

    `zero_terminal_snr` rescales the betas so alpha_bar(T-1) = 0 (Lin et al. 2024, Algorithm 1).
    """
    kwargs: dict = {}
    if config.beta_schedule == "laplace":
        kwargs["trained_betas"] = laplace_betas(config.train_timesteps).tolist()
    elif config.beta_schedule == "sigmoid":
        # DPM-Solver, UniPC and others do not build "sigmoid" from its name: carry diffusers' betas explicitly
        sigmoid = DDPMScheduler(config.train_timesteps, *LINEAR_BETAS, beta_schedule="sigmoid")
        kwargs["trained_betas"] = sigmoid.betas.tolist()
    elif config.beta_schedule == "scaled_linear":
        kwargs.update(beta_start=SCALED_LINEAR_BETAS[0], beta_end=SCALED_LINEAR_BETAS[1], steps_offset=1)
    elif config.beta_schedule == "linear":
        kwargs.update(beta_start=LINEAR_BETAS[0], beta_end=LINEAR_BETAS[1])
    return DDPMScheduler(
        num_train_timesteps=config.train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        rescale_betas_zero_snr=config.zero_terminal_snr,
        clip_sample=False,
        **kwargs,
    )


def sample_timesteps(n: int, config: FinetuneConfig, generator: torch.Generator) -> torch.Tensor:
    """`n` integer timesteps in [0, T) on the generator's device.

    uniform: Ho et al. 2020. logit_normal: t/T = sigmoid(u), u ~ N(0, 1) (Esser et al. 2024, eq. 19 with
    m = 0, s = 1), which puts more draws at the middle of the schedule.
    """
    steps = config.train_timesteps
    device = generator.device
    if config.timestep_sampling == "uniform":
        return torch.randint(0, steps, (n,), generator=generator, device=device)
    u = torch.sigmoid(torch.randn(n, generator=generator, device=device))
    return (u * steps).long().clamp_(max=steps - 1)


def loss_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, config: FinetuneConfig) -> torch.Tensor:
    """Per-sample MSE weights: min-SNR-gamma (Hang et al. 2023, eq. 9-10) when `config.snr_gamma` > 0, else 1.

    epsilon target: min(SNR, gamma) / SNR; v target: min(SNR, gamma) / (SNR + 1).
    """
    if config.snr_gamma == 0:
        return torch.ones(timesteps.shape, device=timesteps.device)
    snr = compute_snr(scheduler, timesteps)
    clipped = snr.clamp(max=config.snr_gamma)
    return clipped / (snr + 1) if config.prediction_type == "v_prediction" else clipped / snr


def offset_noise(noise: torch.Tensor, offset: float, generator: torch.Generator) -> torch.Tensor:
    """noise + offset * n with one n ~ N(0, 1) per image and channel (Guttenberg 2023, "Diffusion with
    Offset Noise"): lets the model change an image's mean brightness. offset = 0 returns `noise` unchanged."""
    if offset == 0:
        return noise
    shape = (noise.shape[0], noise.shape[1], *([1] * (noise.ndim - 2)))
    return noise + offset * torch.randn(shape, generator=generator, device=noise.device, dtype=noise.dtype)
