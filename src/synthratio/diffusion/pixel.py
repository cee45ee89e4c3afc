"""Pixel-space diffusion backend: a diffusers UNet2DModel trained from scratch on uint8 scans.

The UNet learns the target class only, or every class at once with a class embedding
(`finetune.class_conditional`); either way it trains in the shared loop of
`synthratio.diffusion.training` against the forward process of `synthratio.diffusion.schedules`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from diffusers import DDPMPipeline, DiffusionPipeline, UNet2DModel

from synthratio.config import FinetuneConfig
from synthratio.diffusion.schedules import build_training_scheduler
from synthratio.diffusion.training import DiffusionTask, FinetuneResult, replace_folder, train_diffusion

if TYPE_CHECKING:
    from dvclive import Live

__all__ = ["CLASSES_FILE", "TRAINING_PATIENTS_FILE", "FinetuneResult", "build_training_scheduler", "build_unet", "replace_folder", "save_pipeline", "train_pixel"]

CLASSES_FILE = "classes.json"  # class list of a class-conditional pipeline: label i is classes[i]
TRAINING_PATIENTS_FILE = "training_patients.json"  # sorted patient groups whose scans the generator learned


def build_unet(config: FinetuneConfig, num_classes: int | None = None) -> UNet2DModel:
    """A one-channel UNet2DModel of `config.block_channels` levels, initialised from `config.seed`.

    Plain ResNet blocks at every level; self-attention only in the middle block, at the lowest
    resolution, where it costs little on a CPU. `num_classes` adds a class embedding (added to the
    timestep embedding, as in Dhariwal & Nichol 2021).
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
            num_class_embeds=num_classes,
        )


def _check_images(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], image_size: int) -> None:
    expected = f"uint8 (N, {image_size}, {image_size})"
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (image_size, image_size):
        raise ValueError(f"training images have dtype {images.dtype} and shape {images.shape}; expected {expected}")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"training labels have dtype {labels.dtype} and shape {labels.shape}; expected integers ({len(images)},)")
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(class_names):
        raise ValueError(f"training labels span {labels.min()}..{labels.max()}; expected 0..{len(class_names) - 1} for classes {list(class_names)}")


def training_rows(labels: np.ndarray, class_names: Sequence[str], config: FinetuneConfig) -> np.ndarray:
    """Rows of the scans the UNet learns: the target class (or every class when class-conditional), at most
    `config.max_images` of them, a seeded choice kept in the original order."""
    if config.target_class not in class_names:
        raise ValueError(f"params.yaml: finetune.target_class={config.target_class!r}; expected one of {list(class_names)}")
    rows = np.arange(len(labels)) if config.class_conditional else np.flatnonzero(labels == list(class_names).index(config.target_class))
    if 0 < config.max_images < len(rows):
        rows = rows[np.sort(np.random.default_rng(config.seed).choice(len(rows), config.max_images, replace=False))]
    if len(rows) == 0:
        raise ValueError(f"no training images of class {config.target_class!r} among {len(labels)}; expected N >= 1")
    return rows


def select_training_images(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], config: FinetuneConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The scans and labels at `training_rows`."""
    rows = training_rows(labels, class_names, config)
    return images[rows], labels[rows]


def _fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images).data)
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).data)
    return digest.hexdigest()


def pixel_task(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], config: FinetuneConfig) -> DiffusionTask:
    """The training task on uint8 (N, H, W) scans: x0 = scan / 127.5 - 1 in [-1, 1], flipped left-right with
    probability 1/2 (a draw of the loop's generator), with `class_labels` when class-conditional."""
    data = torch.from_numpy(np.array(images))  # a writable copy (prepared arrays are read-only memory maps)
    classes = torch.from_numpy(labels.astype(np.int64))

    def make_batch(indices: torch.Tensor, generator: torch.Generator, share: slice = slice(None)) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        flip = (torch.rand(len(indices), generator=generator) < 0.5)[share]
        indices = indices[share]
        x0 = data[indices].unsqueeze(1).float() / 127.5 - 1.0
        x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
        return x0, ({"class_labels": classes[indices]} if config.class_conditional else {})

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
    config: FinetuneConfig,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    live: Live | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Train a UNet from scratch on uint8 (N, H, W) scans at `config.image_size` with integer `labels`
    (label i is `class_names[i]`): DDPM (Ho et al. 2020) in `train_diffusion`, resumable from `checkpoint_dir`.

    A class-conditional result carries `class_names`, which `save_pipeline` writes as classes.json.
    """
    _check_images(images, labels, class_names, config.image_size)
    images, labels = select_training_images(images, labels, class_names, config)
    task = pixel_task(images, labels, class_names, config)
    trained = train_diffusion(task, config, device, checkpoint_dir=checkpoint_dir, live=live, progress=progress)
    return FinetuneResult(
        pipeline=DDPMPipeline(unet=trained.unet, scheduler=task.scheduler),
        losses=trained.losses,
        seconds=trained.seconds,
        images_per_second=trained.images_per_second,
        resumed_from_step=trained.resumed_from_step,
        classes=tuple(class_names) if config.class_conditional else (),
    )


def save_pipeline(
    pipeline: DiffusionPipeline,
    out_dir: Path,
    classes: Sequence[str] = (),
    training_patients: Sequence[int] | None = None,
    pretrained: str = "",
) -> None:
    """Write `pipeline` in diffusers' format (safetensors) to `out_dir`, atomically replacing it; a
    class-conditional pipeline also gets its class list as classes.json (a JSON list; label i = classes[i]),
    and `training_patients` (the patient groups of the scans it learned from) go to training_patients.json,
    so anyone can check which patients a generator saw.

    A pipeline whose UNet carries LoRA adapters (latent backend, lora_rank > 0) is written as the adapters
    alone, with `pretrained`, the base pipeline they belong to (`synthratio.diffusion.latent.save_lora`)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        if getattr(getattr(pipeline, "unet", None), "peft_config", None):
            from synthratio.diffusion.latent import save_lora  # imports peft (and this module)

            save_lora(pipeline, staging, pretrained)
        else:
            pipeline.save_pretrained(staging, safe_serialization=True)
        if classes:
            (staging / CLASSES_FILE).write_text(json.dumps(list(classes)) + "\n")
        if training_patients is not None:
            (staging / TRAINING_PATIENTS_FILE).write_text(json.dumps(sorted(int(p) for p in set(training_patients))) + "\n")
        replace_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
