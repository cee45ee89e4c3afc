"""Pixel-space diffusion backend: a diffusers UNet2DModel trained from scratch on uint8 scans.

Training follows Ho et al. 2020 (DDPM, Algorithm 1): draw t uniformly, noise the image with the forward
process q(x_t | x_0), and regress the UNet onto the noise (epsilon) or onto the velocity
v = sqrt(alpha_bar) * eps - sqrt(1 - alpha_bar) * x_0 (Salimans & Ho 2022), with the beta schedules of
diffusers (cosine: Nichol & Dhariwal 2021).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline, UNet2DModel
from tqdm.auto import tqdm

from synthratio.config import FinetuneConfig

if TYPE_CHECKING:
    from dvclive import Live


@dataclass
class FinetuneResult:
    pipeline: DDPMPipeline  # the trained UNet with its training scheduler
    losses: list[float]  # training loss per optimizer step
    seconds: float  # wall time of the optimizer steps
    images_per_second: float  # training throughput


def build_unet(config: FinetuneConfig) -> UNet2DModel:
    """A one-channel UNet2DModel of `config.block_channels` levels, initialised from `config.seed`.

    Plain ResNet blocks at every level; self-attention only in the middle block, at the lowest
    resolution, where it costs little on a CPU.
    """
    levels = len(config.block_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return UNet2DModel(
            sample_size=config.image_size,
            in_channels=1,
            out_channels=1,
            block_out_channels=config.block_channels,
            layers_per_block=config.layers_per_block,
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            norm_num_groups=math.gcd(32, *config.block_channels),
        )


def build_training_scheduler(config: FinetuneConfig) -> DDPMScheduler:
    """The forward process q(x_t | x_0) of Ho et al. 2020 with `config`'s T, betas and prediction target."""
    return DDPMScheduler(
        num_train_timesteps=config.train_timesteps,
        beta_schedule=config.beta_schedule,
        prediction_type=config.prediction_type,
        clip_sample=False,
    )


def _check_images(images: np.ndarray, image_size: int) -> None:
    expected = f"uint8 (N, {image_size}, {image_size})"
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (image_size, image_size):
        raise ValueError(f"training images have dtype {images.dtype} and shape {images.shape}; expected {expected}")
    if len(images) == 0:
        raise ValueError(f"no training images (shape {images.shape}); expected {expected} with N >= 1")


def _batch_indices(count: int, batch_size: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of `steps` batches, drawn as consecutive passes over a fresh permutation of the images."""
    passes = math.ceil(steps * batch_size / count)
    order = torch.cat([torch.randperm(count, generator=generator) for _ in range(passes)])
    return order[: steps * batch_size].view(steps, batch_size)


def train_pixel(
    images: np.ndarray,
    config: FinetuneConfig,
    device: torch.device,
    live: Live | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Train a UNet from scratch on uint8 (N, H, W) images at `config.image_size` (DDPM, Ho et al. 2020).

    Every random draw (weights, batches, flips, timesteps, noise) comes from `config.seed` on the CPU,
    so a run repeats exactly on the same device. Logs `loss` per step to `live` when given.
    """
    _check_images(images, config.image_size)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    unet = build_unet(config).to(device).train()
    scheduler = build_training_scheduler(config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate)
    data = torch.from_numpy(images).to(device)
    batches = _batch_indices(len(images), config.batch_size, config.steps, generator)
    shape = (config.batch_size, 1, config.image_size, config.image_size)

    losses: list[float] = []
    start = time.perf_counter()
    for step in tqdm(range(config.steps), desc="finetune", unit="step", disable=not progress):
        clean = data[batches[step].to(device)].unsqueeze(1).float() / 127.5 - 1.0
        flip = (torch.rand(config.batch_size, generator=generator) < 0.5).to(device)
        clean = torch.where(flip.view(-1, 1, 1, 1), clean.flip(-1), clean)
        noise = torch.randn(shape, generator=generator).to(device)
        timesteps = torch.randint(0, config.train_timesteps, (config.batch_size,), generator=generator).to(device)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        target = noise if config.prediction_type == "epsilon" else scheduler.get_velocity(clean, noise, timesteps)
        loss = F.mse_loss(unet(noisy, timesteps).sample, target)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"finetune: loss is {loss.item()} at step {step}; "
                f"try a lower finetune.learning_rate than {config.learning_rate}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if live is not None:
            live.log_metric("loss", losses[-1])
            live.next_step()
    seconds = time.perf_counter() - start
    return FinetuneResult(
        pipeline=DDPMPipeline(unet=unet.eval(), scheduler=scheduler),
        losses=losses,
        seconds=seconds,
        images_per_second=config.steps * config.batch_size / seconds,
    )


def replace_folder(source: Path, target: Path) -> None:
    """Move the finished folder `source` to `target`, replacing any old `target`.

    A rename is atomic; an old `target` is first renamed aside and deleted afterwards, so `target`
    is always either the old complete folder or the new one (missing only between two renames).
    """
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        target.rename(old / target.name)
        source.rename(target)
        shutil.rmtree(old)
    else:
        source.rename(target)


def save_pipeline(pipeline: DiffusionPipeline, out_dir: Path) -> None:
    """Write `pipeline` in diffusers' format (safetensors) to `out_dir`, atomically replacing it."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        pipeline.save_pretrained(staging, safe_serialization=True)
        replace_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
