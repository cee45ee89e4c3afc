"""One diffusion training loop for both backends (DDPM, Ho et al. 2020, Algorithm 1).

A backend describes its data and UNet as a `DiffusionTask`; `train_diffusion` draws the batches, noises
them with the task's `DDPMScheduler`, regresses the UNet onto the noise or the velocity (Salimans & Ho 2022)
and optimizes it with AdamW, under `accelerate` so the same loop runs on a CPU, one GPU or DDP
(`accelerate launch`). Every draw comes from generators seeded with `finetune.seed`; checkpoints hold
their states, so a resumed CPU run ends with the same weights and losses as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from diffusers import DDPMScheduler, DiffusionPipeline
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

from synthratio.config import FinetuneConfig
from synthratio.diffusion.schedules import loss_weights, offset_noise, sample_timesteps
from synthratio.runtime import progress_bar

if TYPE_CHECKING:
    from dvclive import Live

log = logging.getLogger(__name__)

GRAD_CLIP = 1.0  # max global gradient norm
LOSS_SYNC_STEPS = 16  # losses are read back from the device (one sync) every this many steps
LR_SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine"}  # finetune.lr_schedule -> diffusers name
_TENSORS, _STATE, _PROGRESS = "tensors.safetensors", "optimizer.pt", "progress.json"


@dataclass
class DiffusionTask:
    unet: torch.nn.Module  # UNet2DModel or UNet2DConditionModel; the loop optimizes its parameters with requires_grad
    scheduler: DDPMScheduler  # the training forward process
    items: int  # training items; the loop draws indices in [0, items)
    # (the whole batch's CPU long indices, the loop's CPU generator, this process's share of the batch) ->
    # the share's (x0 float (B, C, H, W), extra UNet kwargs such as {"encoder_hidden_states": ...} or
    # {"class_labels": ...}); the loop moves them to the device. Draws (flips, prompts) are made for the
    # whole batch, so any number of processes trains on the batches one process would.
    make_batch: Callable[[torch.Tensor, torch.Generator, slice], tuple[torch.Tensor, dict[str, torch.Tensor]]]
    trainable: Callable[[], Iterable[torch.nn.Parameter]] | None = None  # default: UNet parameters with requires_grad
    fingerprint: str = ""  # identifies the training data; a checkpoint made with other data is ignored


@dataclass
class FinetuneResult:
    pipeline: DiffusionPipeline  # what stages/finetune.py saves with save_pipeline
    losses: list[float]  # loss per optimizer step, including steps before a resume (from the checkpoint)
    seconds: float  # wall time of the optimizer steps run in this process
    images_per_second: float  # training throughput of this process's steps
    resumed_from_step: int  # 0 when training started fresh
    classes: tuple[str, ...] = ()  # class-conditional pipeline: its classes, saved as classes.json (label i = classes[i])


@dataclass
class TrainedUNet:
    unet: torch.nn.Module  # unwrapped, EMA weights copied in when ema_decay > 0, eval mode
    losses: list[float]
    seconds: float
    images_per_second: float
    resumed_from_step: int


def resolve_mixed_precision(config: FinetuneConfig, device: torch.device) -> str:
    """accelerate's mixed_precision for `config.mixed_precision`: auto is bf16 on a CUDA GPU that has it, else no."""
    precision = config.mixed_precision
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"params.yaml: finetune.mixed_precision='fp16' needs a CUDA device, not {device}; use 'no', 'bf16' or 'auto'")
    return precision


def _accelerator(device: torch.device, precision: str) -> Accelerator:
    try:
        return Accelerator(cpu=device.type == "cpu", mixed_precision=precision)
    except ValueError:
        # accelerate keeps one state per process; a single process that trained before with other settings
        # (tests, benchmarks) starts it afresh. A distributed launch trains once and keeps its state.
        if PartialState().use_distributed:
            raise
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(cpu=device.type == "cpu", mixed_precision=precision)


def _seeds(seed: int) -> tuple[int, int]:
    """Independent seeds for the data stream (CPU) and the noise stream (device) of one `finetune.seed`."""
    data, noise = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    return int(data) >> 1, int(noise) >> 1


def _batch_indices(count: int, batch_size: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of `steps` batches, drawn as consecutive passes over a fresh permutation of the items."""
    passes = math.ceil(steps * batch_size / count)
    order = torch.cat([torch.randperm(count, generator=generator) for _ in range(passes)])
    return order[: steps * batch_size].view(steps, batch_size)


def _fingerprint(task: DiffusionTask, config: FinetuneConfig, processes: int, params: list[torch.nn.Parameter]) -> str:
    settings = {key: value for key, value in dataclasses.asdict(config).items() if key != "checkpoint_every"}
    what = {
        "finetune": settings,
        "items": task.items,
        "data": task.fingerprint,
        "processes": processes,
        "unet": type(task.unet).__name__,
        "parameters": [list(p.shape) for p in params],
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class _Loop:
    """The mutable training state a checkpoint saves and restores."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMAModel | None
    data_generator: torch.Generator
    noise_generator: torch.Generator
    accelerator: Accelerator
    losses: list[float]
    lrs: list[float]


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


def _save_checkpoint(loop: _Loop, folder: Path, step: int, fingerprint: str) -> None:
    """Write the state after `step` optimizer steps into a temporary sibling, then swap it in for `folder`."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        tensors = {f"param.{i}": p.detach().cpu().contiguous() for i, p in enumerate(loop.params)}
        if loop.ema is not None:
            tensors |= {f"ema.{i}": p.detach().cpu().contiguous() for i, p in enumerate(loop.ema.shadow_params)}
        tensors["generator.data"] = loop.data_generator.get_state()
        tensors["generator.noise"] = loop.noise_generator.get_state().cpu()
        save_file(tensors, staging / _TENSORS)
        state = {"optimizer": loop.optimizer.state_dict(), "lr_scheduler": loop.lr_scheduler.state_dict()}
        if loop.accelerator.scaler is not None:
            state["scaler"] = loop.accelerator.scaler.state_dict()
        torch.save(state, staging / _STATE)
        progress = {
            "step": step,
            "losses": loop.losses,
            "lrs": loop.lrs,
            "ema_optimization_step": loop.ema.optimization_step if loop.ema is not None else 0,
            "fingerprint": fingerprint,
        }
        (staging / _PROGRESS).write_text(json.dumps(progress) + "\n")
        replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_checkpoint(loop: _Loop, folder: Path, steps: int, fingerprint: str) -> int:
    """Restore `loop` from `folder` and return its step; 0 (nothing restored) when there is no usable checkpoint."""
    try:
        progress = json.loads((folder / _PROGRESS).read_text())
    except (OSError, ValueError) as error:
        if folder.exists():
            log.warning("checkpoint %s: unreadable (%s); training from step 0", folder, error)
        return 0
    if progress.get("fingerprint") != fingerprint:
        log.info("checkpoint %s: made with other finetune settings, data or process count; ignored", folder)
        return 0
    step = progress["step"]
    if not 0 < step < steps or len(progress["losses"]) != step:
        log.warning("checkpoint %s: step %s does not fit finetune.steps=%d; ignored", folder, step, steps)
        return 0
    tensors = load_file(folder / _TENSORS)
    state = torch.load(folder / _STATE, map_location="cpu", weights_only=True)
    with torch.no_grad():
        for i, p in enumerate(loop.params):
            p.copy_(tensors[f"param.{i}"])
        if loop.ema is not None:
            for i, p in enumerate(loop.ema.shadow_params):
                p.copy_(tensors[f"ema.{i}"])
            loop.ema.optimization_step = progress["ema_optimization_step"]
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.lr_scheduler.load_state_dict(state["lr_scheduler"])
    if loop.accelerator.scaler is not None:
        loop.accelerator.scaler.load_state_dict(state["scaler"])
    loop.data_generator.set_state(tensors["generator.data"])
    loop.noise_generator.set_state(tensors["generator.noise"])
    loop.losses[:] = progress["losses"]
    loop.lrs[:] = progress["lrs"]
    return step


def _flush(pending: list[torch.Tensor], loop: _Loop, config: FinetuneConfig, precision: str, live: Live | None) -> None:
    """Read the pending per-step losses back (mean over processes), check them and log them."""
    if not pending:
        return
    values = loop.accelerator.reduce(torch.stack(pending), reduction="mean").tolist()
    first = len(loop.losses)
    for offset, value in enumerate(values):
        if not math.isfinite(value):
            raise FloatingPointError(
                f"finetune: loss is {value} at step {first + offset}; likely causes: finetune.learning_rate="
                f"{config.learning_rate} too high, or finetune.mixed_precision={config.mixed_precision!r} "
                f"(running as {precision!r}) overflowing; try a lower rate or mixed_precision 'no'"
            )
    loop.losses.extend(values)
    if live is not None and loop.accelerator.is_main_process:
        for step in range(first, len(loop.losses)):
            _log_step(live, loop.losses[step], loop.lrs[step])
    pending.clear()


def _log_step(live: Live, loss: float, lr: float) -> None:
    live.log_metric("loss", loss)
    live.log_metric("lr", lr)
    live.next_step()


def diffusion_loss(
    unet: torch.nn.Module,
    scheduler: DDPMScheduler,
    x0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    unet_kwargs: dict[str, torch.Tensor],
    config: FinetuneConfig,
) -> torch.Tensor:
    """Weighted MSE between the UNet's output at x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise and its
    target: the noise (Ho et al. 2020, eq. 14) or v = sqrt(alpha_bar) noise - sqrt(1 - alpha_bar) x0
    (Salimans & Ho 2022), each image weighted by `loss_weights` (min-SNR-gamma, Hang et al. 2023)."""
    noisy = scheduler.add_noise(x0, noise, timesteps)
    target = noise if config.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, timesteps)
    prediction = unet(noisy, timesteps, **unet_kwargs).sample
    per_image = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=tuple(range(1, x0.ndim)))
    return (per_image * loss_weights(scheduler, timesteps, config)).mean()


def train_diffusion(
    task: DiffusionTask,
    config: FinetuneConfig,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    live: Live | None = None,
    progress: bool = True,
) -> TrainedUNet:
    """Train `task.unet` for `config.steps` AdamW steps of `config.batch_size` items (over all processes).

    Loss: MSE to the epsilon or v target, weighted per image by min-SNR-gamma when set; t drawn uniformly
    or logit-normal, noise with an optional offset (see `synthratio.diffusion.schedules`). Under
    `accelerate launch` every process draws the whole global batch's indices, timesteps and noise and
    takes its own share, so those draws do not depend on the process count. With `checkpoint_dir` and
    `config.checkpoint_every`, the state is saved every that many steps and a matching checkpoint found
    there at start is resumed. Logs `loss` and `lr` per step to `live` when given.
    """
    precision = resolve_mixed_precision(config, device)
    accelerator = _accelerator(device, precision)
    processes, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % processes:
        raise ValueError(
            f"params.yaml: finetune.batch_size={config.batch_size} is not divisible by the {processes} training "
            f"processes; use a multiple of {processes}"
        )
    if task.items < 1:
        raise ValueError(f"finetune: no training items ({task.items}); expected at least 1")
    share = slice(rank * config.batch_size // processes, (rank + 1) * config.batch_size // processes)

    unet = task.unet
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    params = list(task.trainable() if task.trainable is not None else (p for p in unet.parameters() if p.requires_grad))
    if not params:
        raise ValueError(f"finetune: {type(unet).__name__} has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    lr_scheduler = get_scheduler(
        LR_SCHEDULES[config.lr_schedule], optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=config.steps
    )
    unet, optimizer = accelerator.prepare(unet, optimizer)
    device = accelerator.device
    data_seed, noise_seed = _seeds(config.seed)
    loop = _Loop(
        params=params,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        ema=EMAModel(params, decay=config.ema_decay, foreach=True) if config.ema_decay > 0 else None,
        data_generator=torch.Generator().manual_seed(data_seed),
        noise_generator=torch.Generator(device=device).manual_seed(noise_seed),
        accelerator=accelerator,
        losses=[],
        lrs=[],
    )
    batches = _batch_indices(task.items, config.batch_size, config.steps, loop.data_generator)
    fingerprint = _fingerprint(task, config, processes, params)
    saving = checkpoint_dir is not None and config.checkpoint_every > 0
    start = _load_checkpoint(loop, Path(checkpoint_dir), config.steps, fingerprint) if checkpoint_dir is not None else 0
    if accelerator.is_main_process:
        log.info(
            "training %s: %d items, steps %d..%d of batch %d (%d per process), device %s, precision %s, %d process(es)",
            type(task.unet).__name__, task.items, start, config.steps, config.batch_size,
            config.batch_size // processes, device, precision, processes,
        )
        if start and live is not None:
            for loss, lr in zip(loop.losses, loop.lrs):
                _log_step(live, loss, lr)

    scheduler = task.scheduler
    pending: list[torch.Tensor] = []
    bar = progress_bar(total=config.steps, initial=start, desc="finetune", unit="step", enabled=progress and accelerator.is_main_process)
    seconds = 0.0
    tick = time.perf_counter()
    for step in range(start, config.steps):
        x0, kwargs = task.make_batch(batches[step], loop.data_generator, share)
        x0 = x0.to(device)
        kwargs = {key: value.to(device) for key, value in kwargs.items()}
        timesteps = sample_timesteps(config.batch_size, config, loop.data_generator)[share].to(device)
        noise = torch.randn((config.batch_size, *x0.shape[1:]), generator=loop.noise_generator, device=device, dtype=x0.dtype)
        noise = offset_noise(noise, config.noise_offset, loop.noise_generator)[share]
        loss = diffusion_loss(unet, scheduler, x0, noise, timesteps, kwargs, config)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, GRAD_CLIP)
        loop.lrs.append(lr_scheduler.get_last_lr()[0])
        optimizer.step()
        if not accelerator.optimizer_step_was_skipped:  # fp16: the grad scaler skips steps with inf gradients
            lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if loop.ema is not None:
            loop.ema.step(params)
        pending.append(loss.detach())
        bar.update()
        done = step + 1
        checkpoint_now = saving and done % config.checkpoint_every == 0 and done < config.steps
        if len(pending) == LOSS_SYNC_STEPS or checkpoint_now or done == config.steps:
            _flush(pending, loop, config, precision, live)
            bar.set_postfix(loss=f"{loop.losses[-1]:.4f}")
        if checkpoint_now:
            seconds += time.perf_counter() - tick
            if accelerator.is_main_process:
                _save_checkpoint(loop, Path(checkpoint_dir), done, fingerprint)
            accelerator.wait_for_everyone()
            tick = time.perf_counter()
    seconds += time.perf_counter() - tick
    bar.close()

    trained = accelerator.unwrap_model(unet, keep_fp32_wrapper=False)
    if loop.ema is not None:
        loop.ema.copy_to(params)
    run = config.steps - start
    return TrainedUNet(
        unet=trained.eval(),
        losses=loop.losses,
        seconds=seconds,
        images_per_second=run * config.batch_size / seconds if seconds > 0 else 0.0,
        resumed_from_step=start,
    )
