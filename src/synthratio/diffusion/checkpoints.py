"""Checkpoints of the diffusion training loop (`synthratio.diffusion.training.train_diffusion`).

A checkpoint folder holds the state after some optimizer steps: the trained parameters, their EMA shadows and
the states of the data and noise generators (safetensors), the optimizer, LR-scheduler and grad-scaler states
(a weights-only torch file), and the step, the losses and learning rates so far and a fingerprint of the run
(JSON). It is written into a temporary sibling and swapped in whole, so a kill never leaves half of one; a
checkpoint whose fingerprint differs (other settings, data or process count) is ignored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file

from synthratio.config import FinetuneConfig
from synthratio.runtime import replace_folder

log = logging.getLogger(__name__)

_TENSORS, _STATE, _PROGRESS = "tensors.safetensors", "optimizer.pt", "progress.json"


@dataclass
class LoopState:
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


def run_fingerprint(
    config: FinetuneConfig,
    *,
    unet: torch.nn.Module,
    params: list[torch.nn.Parameter],
    items: int,
    data: str,
    processes: int,
) -> str:
    """sha256 of what a resumed run must share with the checkpoint: the finetune settings (but how often it
    checkpoints), the training items and their fingerprint `data`, the process count, the UNet class and the
    shapes of the trained parameters."""
    settings = {key: value for key, value in dataclasses.asdict(config).items() if key != "checkpoint_every"}
    what = {
        "finetune": settings,
        "items": items,
        "data": data,
        "processes": processes,
        "unet": type(unet).__name__,
        "parameters": [list(p.shape) for p in params],
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def save_checkpoint(state: LoopState, folder: Path, *, step: int, fingerprint: str) -> None:
    """Write the state after `step` optimizer steps into a temporary sibling, then swap it in for `folder`."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        tensors = {f"param.{i}": p.detach().cpu().contiguous() for i, p in enumerate(state.params)}
        if state.ema is not None:
            tensors |= {f"ema.{i}": p.detach().cpu().contiguous() for i, p in enumerate(state.ema.shadow_params)}
        tensors["generator.data"] = state.data_generator.get_state()
        tensors["generator.noise"] = state.noise_generator.get_state().cpu()
        save_file(tensors, staging / _TENSORS)
        states = {"optimizer": state.optimizer.state_dict(), "lr_scheduler": state.lr_scheduler.state_dict()}
        if state.accelerator.scaler is not None:
            states["scaler"] = state.accelerator.scaler.state_dict()
        torch.save(states, staging / _STATE)
        progress = {
            "step": step,
            "losses": state.losses,
            "lrs": state.lrs,
            "ema_optimization_step": state.ema.optimization_step if state.ema is not None else 0,
            "fingerprint": fingerprint,
        }
        (staging / _PROGRESS).write_text(json.dumps(progress) + "\n")
        replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_checkpoint(state: LoopState, folder: Path, *, steps: int, fingerprint: str) -> int:
    """Restore `state` from `folder` and return its step; 0 (nothing restored) when there is no usable checkpoint."""
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
    states = torch.load(folder / _STATE, map_location="cpu", weights_only=True)
    with torch.no_grad():
        for i, p in enumerate(state.params):
            p.copy_(tensors[f"param.{i}"])
        if state.ema is not None:
            for i, p in enumerate(state.ema.shadow_params):
                p.copy_(tensors[f"ema.{i}"])
            state.ema.optimization_step = progress["ema_optimization_step"]
    state.optimizer.load_state_dict(states["optimizer"])
    state.lr_scheduler.load_state_dict(states["lr_scheduler"])
    if state.accelerator.scaler is not None:
        state.accelerator.scaler.load_state_dict(states["scaler"])
    state.data_generator.set_state(tensors["generator.data"])
    state.noise_generator.set_state(tensors["generator.noise"])
    state.losses[:] = progress["losses"]
    state.lrs[:] = progress["lrs"]
    return step
