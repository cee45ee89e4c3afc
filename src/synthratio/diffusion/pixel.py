"""Pixel-space diffusion backend: a diffusers UNet2DModel trained from scratch on uint8 scans.

The UNet learns the target class only, or every class at once with a class embedding
(`finetune.class_conditional`); either way it trains in the shared loop of
`synthratio.diffusion.training` against the forward process of `synthratio.diffusion.schedules`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers import DDPMPipeline, UNet2DModel

from synthratio.config import FinetuneConfig
from synthratio.diffusion.schedules import build_training_scheduler
from synthratio.diffusion.training import (
    DiffusionTask,
    FinetuneResult,
    check_training_images,
    select_training_images,
    train_diffusion,
)

if TYPE_CHECKING:
    from dvclive import Live

__all__ = ["build_unet", "pixel_task", "train_pixel"]


def build_unet(config: FinetuneConfig, num_classes: int | None = None) -> UNet2DModel:
    """A one-channel UNet2DModel of `config.block_channels` levels, initialised from `config.seed`.

    Plain ResNet blocks at every level; self-attention only in the middle block, at the lowest
    resolution, where it costs little on a CPU. `num_classes` adds a class embedding (added to the
    timestep embedding, as in Dhariwal & Nichol 2021); with `config.label_dropout` it has one more row, the
    null class `num_classes` that classifier-free guidance samples against (Ho & Salimans 2022).
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
            num_class_embeds=None if num_classes is None else num_classes + (config.label_dropout > 0),
        )


def _fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images).data)
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    return digest.hexdigest()


def pixel_task(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *, config: FinetuneConfig
) -> DiffusionTask:
    """The training task on uint8 (N, H, W) scans: x0 = scan / 127.5 - 1 in [-1, 1], flipped left-right with
    probability 1/2 (a draw of the loop's generator), with `class_labels` when class-conditional; with
    `config.label_dropout` that share of the labels (another draw) becomes the null class len(class_names)."""
    data = torch.from_numpy(np.array(images))  # a writable copy (prepared arrays are read-only memory maps)
    classes = torch.from_numpy(labels.astype(np.int64))
    null = len(class_names) if config.label_dropout > 0 else None  # the null class's label

    def make_batch(
        indices: torch.Tensor, generator: torch.Generator, share: slice = slice(None)
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # draws over the whole batch, then this process's share: every process sees the same draws
        flip = (torch.rand(len(indices), generator=generator) < 0.5)[share]
        dropped = None if null is None else torch.rand(len(indices), generator=generator)[share] < config.label_dropout
        indices = indices[share]
        x0 = data[indices].unsqueeze(1).float() / 127.5 - 1.0
        x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
        if not config.class_conditional:
            return x0, {}
        labels = classes[indices] if dropped is None else torch.where(dropped, null, classes[indices])
        return x0, {"class_labels": labels}

    return DiffusionTask(
        unet=build_unet(config, len(class_names) if config.class_conditional else None),
        scheduler=build_training_scheduler(config),
        items=len(images),
        make_batch=make_batch,
        fingerprint=_fingerprint(images, labels),
    )


def train_pixel(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    config: FinetuneConfig,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    live: Live | None = None,
) -> FinetuneResult:
    """Train a UNet from scratch on uint8 (N, H, W) scans at `config.image_size` with integer `labels`
    (label i is `class_names[i]`): DDPM (Ho et al. 2020) in `train_diffusion`, resumable from `checkpoint_dir`.

    A class-conditional result carries `class_names`, which `pipelines.save_pipeline` writes as classes.json.
    """
    check_training_images(images, labels, class_names, image_size=config.image_size)
    images, labels = select_training_images(images, labels, class_names, config=config)
    task = pixel_task(images, labels, class_names, config=config)
    trained = train_diffusion(task, config, device, checkpoint_dir=checkpoint_dir, live=live)
    return FinetuneResult(
        pipeline=DDPMPipeline(unet=trained.unet, scheduler=task.scheduler),
        losses=trained.losses,
        seconds=trained.seconds,
        images_per_second=trained.images_per_second,
        resumed_from_step=trained.resumed_from_step,
        classes=tuple(class_names) if config.class_conditional else (),
    )
