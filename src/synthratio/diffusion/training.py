"""One diffusion training loop for both backends (DDPM, Ho et al. 2020, Algorithm 1), and the choice of the
scans both backends train on.

A backend describes its data and UNet as a `DiffusionTask`; `train_diffusion` draws the batches, noises
them with the task's `DDPMScheduler`, regresses the UNet onto the noise or the velocity (Salimans & Ho 2022)
and optimizes it with AdamW, under `accelerate` so the same loop runs on a CPU, one GPU or DDP
(`accelerate launch`). Every draw comes from generators seeded with `finetune.seed`; checkpoints
(`synthratio.diffusion.checkpoints`) hold their states, so a resumed CPU run ends with the same weights and
losses as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, PartialState
from diffusers import DDPMScheduler, DiffusionPipeline
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel

from synthratio.config import FinetuneConfig
from synthratio.data.prepared import ScanRows
from synthratio.diffusion.checkpoints import LoopState, load_checkpoint, run_fingerprint, save_checkpoint
from synthratio.diffusion.schedules import loss_weights, offset_noise, sample_timesteps
from synthratio.runtime import progress_bar

if TYPE_CHECKING:
    from dvclive import Live

log = logging.getLogger(__name__)

GRAD_CLIP = 1.0  # max global gradient norm
LOSS_SYNC_STEPS = 16  # losses are read back from the device (one sync) every this many steps
# finetune.lr_schedule (config.LR_SCHEDULES) -> diffusers' name, where they differ: diffusers' "constant"
# would ignore finetune.warmup_steps
DIFFUSERS_LR_SCHEDULES = {"constant": "constant_with_warmup"}


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
    classes: tuple[str, ...] = ()  # class-conditional: its classes (label i is classes[i]), saved as classes.json


@dataclass
class TrainedUNet:
    unet: torch.nn.Module  # unwrapped, EMA weights copied in when ema_decay > 0, eval mode
    losses: list[float]
    seconds: float
    images_per_second: float
    resumed_from_step: int


def check_training_images(
    images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *, image_size: int
) -> None:
    """Raise ValueError unless `images` are uint8 (N, image_size, image_size) scans with integer `labels` (N,)
    in 0..len(class_names) - 1."""
    expected = f"uint8 (N, {image_size}, {image_size})"
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (image_size, image_size):
        raise ValueError(f"training images have dtype {images.dtype} and shape {images.shape}; expected {expected}")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"training labels have dtype {labels.dtype} and shape {labels.shape}; expected integers ({len(images)},)"
        )
    if len(labels) and not 0 <= labels.min() <= labels.max() < len(class_names):
        raise ValueError(
            f"training labels span {labels.min()}..{labels.max()}; "
            f"expected 0..{len(class_names) - 1} for classes {list(class_names)}"
        )


def training_rows(labels: np.ndarray, class_names: Sequence[str], config: FinetuneConfig) -> np.ndarray:
    """Rows of the scans the UNet learns: the target class (or every class when class-conditional), at most
    `config.max_images` of them, a seeded choice kept in the original order."""
    targets = config.target_classes
    if not set(targets) <= set(class_names):
        raise ValueError(
            f"params.yaml: finetune.target_class={config.target_class!r}; expected classes of {list(class_names)}"
        )
    if config.class_conditional:
        rows = np.arange(len(labels))
    else:  # one target class (several need class_conditional)
        rows = np.flatnonzero(labels == list(class_names).index(targets[0]))
    if 0 < config.max_images < len(rows):
        rows = rows[np.sort(np.random.default_rng(config.seed).choice(len(rows), config.max_images, replace=False))]
    if len(rows) == 0:
        raise ValueError(f"no training images of class {config.target_class!r} among {len(labels)}; expected N >= 1")
    return rows


def select_training_images(
    images: np.ndarray | ScanRows, labels: np.ndarray, class_names: Sequence[str], *, config: FinetuneConfig
) -> tuple[np.ndarray | ScanRows, np.ndarray]:
    """The scans and labels at `training_rows`; scans on disk (ScanRows) stay there until read."""
    rows = training_rows(labels, class_names, config)
    return images.select(rows) if isinstance(images, ScanRows) else images[rows], labels[rows]


def resolve_mixed_precision(config: FinetuneConfig, device: torch.device) -> str:
    """accelerate's mixed_precision for `config.mixed_precision`: auto is bf16 on a CUDA GPU that has it, else no."""
    precision = config.mixed_precision
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"params.yaml: finetune.mixed_precision='fp16' needs a CUDA device, not {device}; "
            "use 'no', 'bf16' or 'auto'"
        )
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


def _flush(
    pending: list[torch.Tensor], state: LoopState, config: FinetuneConfig, precision: str, live: Live | None
) -> None:
    """Read the pending per-step losses back (mean over processes), check them and log them."""
    if not pending:
        return
    values = state.accelerator.reduce(torch.stack(pending), reduction="mean").tolist()
    first = len(state.losses)
    for offset, value in enumerate(values):
        if not math.isfinite(value):
            raise FloatingPointError(
                f"finetune: loss is {value} at step {first + offset}; likely causes: finetune.learning_rate="
                f"{config.learning_rate} too high, or finetune.mixed_precision={config.mixed_precision!r} "
                f"(running as {precision!r}) overflowing; try a lower rate or mixed_precision 'no'"
            )
    state.losses.extend(values)
    if live is not None and state.accelerator.is_main_process:
        for step in range(first, len(state.losses)):
            _log_step(live, state.losses[step], state.lrs[step])
    pending.clear()


def _log_step(live: Live, loss: float, lr: float) -> None:
    live.log_metric("loss", loss)
    live.log_metric("lr", lr)
    live.next_step()


def diffusion_loss(
    unet: torch.nn.Module,
    scheduler: DDPMScheduler,
    *,
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
    *,
    checkpoint_dir: Path | None = None,
    live: Live | None = None,
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
    share = _process_share(task, config, accelerator)
    unet, state = _prepare(task, config, accelerator)
    batches = _batch_indices(task.items, config.batch_size, config.steps, state.data_generator)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fingerprint = run_fingerprint(
        config,
        unet=task.unet,
        params=state.params,
        items=task.items,
        data=task.fingerprint,
        processes=accelerator.num_processes,
    )
    start = load_checkpoint(state, folder, steps=config.steps, fingerprint=fingerprint) if folder is not None else 0
    if accelerator.is_main_process:
        log.info(
            "training %s: %d items, steps %d..%d of batch %d (%d per process), device %s, precision %s, %d process(es)",
            type(task.unet).__name__,
            task.items,
            start,
            config.steps,
            config.batch_size,
            config.batch_size // accelerator.num_processes,
            accelerator.device,
            precision,
            accelerator.num_processes,
        )
        if start and live is not None:
            for loss, lr in zip(state.losses, state.lrs):
                _log_step(live, loss, lr)
    seconds = _train_steps(
        unet,
        task,
        config,
        state,
        batches=batches,
        share=share,
        start=start,
        precision=precision,
        live=live,
        checkpoints=folder if config.checkpoint_every > 0 else None,
        fingerprint=fingerprint,
    )

    trained = accelerator.unwrap_model(unet, keep_fp32_wrapper=False)
    if state.ema is not None:
        state.ema.copy_to(state.params)
    run = config.steps - start
    return TrainedUNet(
        unet=trained.eval(),
        losses=state.losses,
        seconds=seconds,
        images_per_second=run * config.batch_size / seconds if seconds > 0 else 0.0,
        resumed_from_step=start,
    )


def _process_share(task: DiffusionTask, config: FinetuneConfig, accelerator: Accelerator) -> slice:
    """This process's slice of each global batch; raises when the batch or the items do not allow one."""
    processes, rank = accelerator.num_processes, accelerator.process_index
    if config.batch_size % processes:
        raise ValueError(
            f"params.yaml: finetune.batch_size={config.batch_size} is not divisible by the {processes} training "
            f"processes; use a multiple of {processes}"
        )
    if task.items < 1:
        raise ValueError(f"finetune: no training items ({task.items}); expected at least 1")
    return slice(rank * config.batch_size // processes, (rank + 1) * config.batch_size // processes)


def _prepare(
    task: DiffusionTask, config: FinetuneConfig, accelerator: Accelerator
) -> tuple[torch.nn.Module, LoopState]:
    """The UNet in training mode, wrapped by `accelerator`, and the fresh state of its optimization (AdamW,
    the LR schedule, EMA when finetune.ema_decay > 0, and the data and noise generators of finetune.seed)."""
    unet = task.unet
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    params = list(task.trainable() if task.trainable is not None else (p for p in unet.parameters() if p.requires_grad))
    if not params:
        raise ValueError(f"finetune: {type(unet).__name__} has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    lr_scheduler = get_scheduler(
        DIFFUSERS_LR_SCHEDULES.get(config.lr_schedule, config.lr_schedule),
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=config.steps,
    )
    unet, optimizer = accelerator.prepare(unet, optimizer)
    data_seed, noise_seed = _seeds(config.seed)
    state = LoopState(
        params=params,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        ema=EMAModel(params, decay=config.ema_decay, foreach=True) if config.ema_decay > 0 else None,
        data_generator=torch.Generator().manual_seed(data_seed),
        noise_generator=torch.Generator(device=accelerator.device).manual_seed(noise_seed),
        accelerator=accelerator,
        losses=[],
        lrs=[],
    )
    return unet, state


def _train_steps(
    unet: torch.nn.Module,
    task: DiffusionTask,
    config: FinetuneConfig,
    state: LoopState,
    *,
    batches: torch.Tensor,
    share: slice,
    start: int,
    precision: str,
    live: Live | None,
    checkpoints: Path | None,
    fingerprint: str,
) -> float:
    """Run optimizer steps start..config.steps, saving a checkpoint into `checkpoints` (when given) every
    config.checkpoint_every steps; return the seconds the steps took, checkpoint writes left out."""
    accelerator = state.accelerator
    pending: list[torch.Tensor] = []
    bar = progress_bar(total=config.steps, initial=start, desc="finetune", unit="step")
    seconds = 0.0
    tick = time.perf_counter()
    for step in range(start, config.steps):
        pending.append(_optimizer_step(unet, task, config, state, batches[step], share).detach())
        bar.update()
        done = step + 1
        checkpoint_now = checkpoints is not None and done % config.checkpoint_every == 0 and done < config.steps
        if len(pending) == LOSS_SYNC_STEPS or checkpoint_now or done == config.steps:
            _flush(pending, state, config, precision, live)
            bar.set_postfix(loss=f"{state.losses[-1]:.4f}")
        if checkpoint_now:
            seconds += time.perf_counter() - tick
            if accelerator.is_main_process:
                save_checkpoint(state, checkpoints, step=done, fingerprint=fingerprint)
            accelerator.wait_for_everyone()
            tick = time.perf_counter()
    seconds += time.perf_counter() - tick
    bar.close()
    return seconds


def _optimizer_step(
    unet: torch.nn.Module,
    task: DiffusionTask,
    config: FinetuneConfig,
    state: LoopState,
    indices: torch.Tensor,
    share: slice,
) -> torch.Tensor:
    """One AdamW step on the batch `indices` (this process's `share` of it); returns the loss on the device."""
    accelerator, device = state.accelerator, state.accelerator.device
    x0, kwargs = task.make_batch(indices, state.data_generator, share)
    x0 = x0.to(device)
    kwargs = {key: value.to(device) for key, value in kwargs.items()}
    timesteps = sample_timesteps(config.batch_size, config, state.data_generator)[share].to(device)
    shape = (config.batch_size, *x0.shape[1:])
    noise = torch.randn(shape, generator=state.noise_generator, device=device, dtype=x0.dtype)
    noise = offset_noise(noise, config.noise_offset, state.noise_generator)[share]
    loss = diffusion_loss(
        unet, task.scheduler, x0=x0, noise=noise, timesteps=timesteps, unet_kwargs=kwargs, config=config
    )
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(state.params, GRAD_CLIP)
    state.lrs.append(state.lr_scheduler.get_last_lr()[0])
    state.optimizer.step()
    if not accelerator.optimizer_step_was_skipped:  # fp16: the grad scaler skips steps with inf gradients
        state.lr_scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    if state.ema is not None:
        state.ema.step(state.params)
    return loss
