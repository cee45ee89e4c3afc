"""Latent backend: fine-tune the UNet of a pretrained Stable Diffusion pipeline on real scans.

Latent diffusion (Rombach et al. 2022): the frozen VAE maps a scan to a 4-channel latent at 1/8 of its
size, the frozen CLIP text encoder maps a prompt to the UNet's cross-attention context, and only the UNet
learns, either fully or through LoRA adapters on its attention projections (Hu et al. 2022, via peft).
A LoRA run is saved as its adapter alone (`synthratio.diffusion.pipelines.save_lora`).

Unless params say otherwise, fine-tuning keeps the forward process the model was pretrained with:
`finetune.beta_schedule` and `finetune.prediction_type` set to `pretrained` stand for the pretrained
scheduler's own (SD 1.5: scaled_linear, epsilon; `pretrained_schedule`). Any other value is trained as
asked, with a warning where it differs from the pretrained model's, which the UNet then has to re-learn.

Every training scan is encoded once (the mean of the VAE's posterior times its scaling factor, as in
diffusers' training scripts) and cached in `checkpoint_dir/latents.safetensors`, keyed by a fingerprint of
the scans and the VAE, so that a resumed run does not re-encode. Horizontal flips are exact: the flipped
scans are encoded too, because the VAE is not flip-equivariant (its kernels are not symmetric), so a
flipped latent would decode to something that is not quite the flipped scan; the price is one more
encoding pass and twice the (host) memory of the latents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate import PartialState
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from synthratio.config import PRETRAINED, FinetuneConfig, ParamsError
from synthratio.data.prepared import ScanRows
from synthratio.diffusion.pipelines import load_pretrained
from synthratio.diffusion.schedules import build_training_scheduler
from synthratio.diffusion.training import (
    DiffusionTask,
    FinetuneResult,
    check_training_images,
    select_training_images,
    train_diffusion,
)
from synthratio.runtime import autocast, write_atomically

if TYPE_CHECKING:
    from dvclive import Live

log = logging.getLogger(__name__)

LATENT_CACHE = "latents.safetensors"  # in checkpoint_dir, beside the training loop's UNET_CHECKPOINT folder
UNET_CHECKPOINT = "unet"  # train_diffusion replaces its checkpoint folder whole, so it gets its own
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections (Hu et al. 2022 adapt W_q, W_v)
ENCODE_BATCH = 32
# diffusers' defaults, where a scheduler config names none
SCHEDULER_DEFAULTS = {"beta_schedule": "linear", "prediction_type": "epsilon"}


def _to_rgb(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W) grayscale -> float (B, 3, H, W) in [-1, 1], the range the SD VAE was trained on."""
    return (torch.from_numpy(np.ascontiguousarray(images)).float() / 127.5 - 1.0).unsqueeze(1).expand(-1, 3, -1, -1)


def _weights_digest(*modules: torch.nn.Module) -> str:
    """sha256 of the configs and weights of `modules`."""
    digest = hashlib.sha256()
    for module in modules:
        config = getattr(module, "config", {})  # diffusers: a dict; transformers: a PretrainedConfig
        config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _fingerprint(images: np.ndarray | ScanRows, vae: AutoencoderKL) -> str:
    """sha256 of the scans and of the VAE: what the cached latents depend on. The scans are read ENCODE_BATCH at
    a time (the CNV scans of the full Kermany set at 512 px are 10 GB)."""
    digest = hashlib.sha256(str(images.shape).encode())
    for start in range(0, len(images), ENCODE_BATCH):
        digest.update(np.ascontiguousarray(images[start : start + ENCODE_BATCH]).data)
    digest.update(_weights_digest(vae).encode())
    return digest.hexdigest()


@torch.no_grad()
def encode_latents(
    vae: AutoencoderKL,
    images: np.ndarray | ScanRows,
    device: torch.device,
    *,
    batch_size: int = ENCODE_BATCH,
    mirror: bool = False,
) -> torch.Tensor:
    """CPU float32 (N, 4, H/8, W/8): the VAE posterior mean of each scan (flipped left-right when `mirror`)
    times the VAE's scaling factor, the scans read `batch_size` at a time.

    Runs in bf16 autocast on a GPU that has bf16 (the VAE is frozen; its fp32 weights are kept for saving).
    """
    vae = vae.to(device)
    chunks = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        pixels = _to_rgb(batch[:, :, ::-1] if mirror else batch).to(device)
        with autocast(device):
            mean = vae.encode(pixels).latent_dist.mean
        chunks.append((mean.float() * vae.config.scaling_factor).cpu())
    # contiguous (NCHW): the VAE can hand back channels-last strides, which would send the UNet's convolutions
    # down another kernel than latents read back from the cache (different rounding, so a resume would differ)
    return torch.cat(chunks).contiguous()


def cached_latents(
    vae: AutoencoderKL,
    images: np.ndarray | ScanRows,
    device: torch.device,
    *,
    checkpoint_dir: Path | None,
    fingerprint: str | None = None,
) -> torch.Tensor:
    """(2N, 4, h, w): the latents of the scans followed by those of the flipped scans, read from the cache when
    `checkpoint_dir/latents.safetensors` holds them for these scans and this VAE, else encoded (and cached)."""
    fingerprint = fingerprint or _fingerprint(images, vae)
    cache = Path(checkpoint_dir) / LATENT_CACHE if checkpoint_dir is not None else None
    if cache is not None and cache.is_file():
        with safe_open(cache, framework="pt") as handle:
            stored = (handle.metadata() or {}).get("fingerprint")
        if stored == fingerprint:
            log.info("latents of %d scans read from %s", len(images), cache)
            return load_file(cache)["latents"].contiguous()
        log.info("%s holds latents of other scans or another VAE: encoding again", cache)
    started = time.perf_counter()
    latents = torch.cat([encode_latents(vae, images, device), encode_latents(vae, images, device, mirror=True)])
    log.info("encoded %d scans (and their mirror images) in %.1f s", len(images), time.perf_counter() - started)
    if cache is not None:
        metadata = {"fingerprint": fingerprint}
        write_atomically(cache, lambda tmp: save_file({"latents": latents.contiguous()}, tmp, metadata=metadata))
    return latents


def pretrained_schedule(config: FinetuneConfig, pretrained_scheduler_config: Mapping[str, Any]) -> FinetuneConfig:
    """`config` with finetune.beta_schedule and finetune.prediction_type `pretrained` replaced by the pretrained
    scheduler's own values; the other keys as they are."""
    own = {**SCHEDULER_DEFAULTS, **pretrained_scheduler_config}
    resolved = {key: own[key] for key in SCHEDULER_DEFAULTS if getattr(config, key) == PRETRAINED}
    try:
        return dataclasses.replace(config, **resolved)  # checks the values again
    except ParamsError as error:
        raise ParamsError(
            f"{error} (finetune.pretrained={config.pretrained!r}: its scheduler's {resolved}, which "
            f"{PRETRAINED!r} stands for; set finetune.beta_schedule and prediction_type explicitly)"
        ) from error


def latent_training_scheduler(pretrained_scheduler_config: Mapping[str, Any], config: FinetuneConfig) -> DDPMScheduler:
    """The training agenda's forward process (`build_training_scheduler` of `pretrained_schedule(config)`: T,
    betas, prediction type, zero terminal SNR); when the agenda keeps the pretrained model's beta schedule, its
    exact beta range and steps_offset too (SD 1.5: scaled-linear 0.00085..0.012, Rombach et al. 2022)."""
    agenda = build_training_scheduler(pretrained_schedule(config, pretrained_scheduler_config))
    pretrained = {**SCHEDULER_DEFAULTS, **pretrained_scheduler_config}
    for key in SCHEDULER_DEFAULTS:
        if pretrained[key] != agenda.config[key]:
            log.warning(
                "finetune.%s=%r differs from the pretrained model's %r: the UNet has to re-learn it "
                "(finetune.%s: %s keeps the model's own)",
                key,
                agenda.config[key],
                pretrained[key],
                key,
                PRETRAINED,
            )
    if pretrained["beta_schedule"] != agenda.config.beta_schedule or pretrained.get("trained_betas") is not None:
        return agenda
    keep = {key: pretrained[key] for key in ("beta_start", "beta_end", "steps_offset") if key in pretrained}
    return DDPMScheduler.from_config(agenda.config, **keep)


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    return module.requires_grad_(False).eval()


def add_lora(unet: UNet2DConditionModel, rank: int) -> None:
    """Freeze `unet` and add trainable rank-`rank` LoRA adapters (alpha = rank, so the update is B A; Hu et al.
    2022) to its attention projections, through diffusers' peft integration (`unet.add_adapter`)."""
    unet.requires_grad_(False)
    lora = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=list(LORA_TARGETS))
    unet.add_adapter(lora)


def latent_task(
    unet: UNet2DConditionModel,
    scheduler: DDPMScheduler,
    latents: torch.Tensor,
    *,
    prompt_embeds: torch.Tensor,
    fingerprint: str = "",
) -> DiffusionTask:
    """The training task on cached latents (2N, 4, h, w): N scans then their mirror images (`cached_latents`).

    Each draw takes a scan, mirrors it with probability 1/2 (the mirror's own latent) and pairs it with one
    of the P prompt embeddings `prompt_embeds` (P, L, D), all drawn from the loop's generator.
    """
    count = len(latents) // 2

    def make_batch(
        indices: torch.Tensor, generator: torch.Generator, share: slice = slice(None)
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        flip = (torch.rand(len(indices), generator=generator) < 0.5)[share]
        prompt = torch.randint(len(prompt_embeds), (len(indices),), generator=generator)[share]
        context = prompt_embeds[prompt.to(prompt_embeds.device)]
        return latents[indices[share] + flip.long() * count], {"encoder_hidden_states": context}

    return DiffusionTask(unet=unet, scheduler=scheduler, items=count, make_batch=make_batch, fingerprint=fingerprint)


def train_latent(
    images: np.ndarray | ScanRows,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    config: FinetuneConfig,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    live: Live | None = None,
) -> FinetuneResult:
    """Fine-tune the UNet of `config.pretrained` on the uint8 (N, H, W) scans at `config.image_size` whose
    integer `labels` name `config.target_class` in `class_names` (the signature of `train_pixel`).

    lora_rank 0 trains every UNet weight; lora_rank r > 0 trains rank-r LoRA adapters (alpha = r) on the
    attention projections, which the returned UNet carries unmerged (`pipelines.save_pipeline` saves them alone).
    Returns a StableDiffusionPipeline with the trained UNet, the pretrained VAE, tokenizer and text encoder,
    and the training scheduler (`latent_training_scheduler`).
    """
    if config.class_conditional:
        raise ValueError(
            "params.yaml: finetune.class_conditional=True is for the pixel backend; the latent backend "
            "learns finetune.target_class alone, named by finetune.prompts: set it to false"
        )
    check_training_images(images, labels, class_names, image_size=config.image_size)
    images, _ = select_training_images(images, labels, class_names, config=config)
    state = PartialState(cpu=device.type == "cpu")  # as train_diffusion's Accelerator
    if state.num_processes > 1 and device.type == state.device.type:
        device = state.device
    pretrained = load_pretrained(config.pretrained)
    config = pretrained_schedule(config, pretrained.scheduler.config)  # the loop's loss target follows it too
    vae, text_encoder, unet = _freeze(pretrained.vae), _freeze(pretrained.text_encoder.to(device)), pretrained.unet
    expected = unet.config.sample_size * pretrained.vae_scale_factor
    if expected != config.image_size:
        log.warning(
            "finetune.image_size=%d but %s was trained at %d px", config.image_size, config.pretrained, expected
        )

    fingerprint = _fingerprint(images, vae)
    with state.main_process_first():  # the main process encodes and caches; the others then read the cache
        latents = cached_latents(vae, images, device, checkpoint_dir=checkpoint_dir, fingerprint=fingerprint)
    vae.to(device)
    with torch.no_grad():
        prompts = torch.cat([pretrained.encode_prompt(prompt, device, 1, False)[0] for prompt in config.prompts])

    # a checkpoint resumes only on the same latents and the same pretrained UNet and text encoder
    fingerprint += _weights_digest(unet, text_encoder)
    if config.lora_rank:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)  # LoRA's A matrices are drawn from torch's global generator
            add_lora(unet, config.lora_rank)
    else:
        unet.requires_grad_(True)
    scheduler = latent_training_scheduler(dict(pretrained.scheduler.config), config)
    task = latent_task(unet, scheduler, latents, prompt_embeds=prompts, fingerprint=fingerprint)
    log.info(
        "latent backend: %s, %s, %s betas, %s target, %d scans -> latents %s",
        config.pretrained,
        f"LoRA rank {config.lora_rank}" if config.lora_rank else "full UNet",
        scheduler.config.beta_schedule,
        scheduler.config.prediction_type,
        task.items,
        tuple(latents.shape[1:]),
    )
    unet_checkpoint = Path(checkpoint_dir) / UNET_CHECKPOINT if checkpoint_dir is not None else None
    trained = train_diffusion(task, config, device, checkpoint_dir=unet_checkpoint, live=live)
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=pretrained.tokenizer,
        unet=_freeze(trained.unet),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return FinetuneResult(
        pipeline=pipeline,
        losses=trained.losses,
        seconds=trained.seconds,
        images_per_second=trained.images_per_second,
        resumed_from_step=trained.resumed_from_step,
    )
