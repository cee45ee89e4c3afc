"""One GPU per stage process when several experiments run at once (`dvc queue start -j 8`): each stage claims a
free GPU with an OS file lock held for its lifetime, then sets CUDA_VISIBLE_DEVICES to it before CUDA starts, so
torch, accelerate and diffusers all see that one GPU as cuda:0. The OS drops the lock when the process ends,
killed or not, so no stale claim outlives it."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

log = logging.getLogger(__name__)

LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")  # set by accelerate launch and torchrun
_claims: list[GpuClaim] = []  # pin_one_gpu's claim: referenced here, its lock lasts until the process exits


@dataclass
class GpuClaim:
    """A GPU this process holds: the lock is held while `handle` stays open."""

    gpu: str  # the entry of CUDA_VISIBLE_DEVICES (an index, a GPU-/MIG- UUID)
    path: Path  # the lock file, holding the holder's pid for a person looking
    handle: TextIO


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES's non-empty entries when it is set ("" means none),
    else every GPU torch counts. torch counts them with NVML, which leaves CUDA uninitialised."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [entry.strip() for entry in visible.split(",") if entry.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def lock_path(gpu: str, lock_dir: Path) -> Path:
    """The lock file of one GPU entry; UUIDs and MIG ids hold ':' and '/', which a file name cannot."""
    return lock_dir / f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', gpu)}.lock"


def _try_claim(gpu: str, lock_dir: Path) -> GpuClaim | None:
    """The GPU's lock, taken without waiting, or None when another process holds it."""
    path = lock_path(gpu, lock_dir)
    handle = path.open("a+")  # not "w": truncating before the lock is ours would erase the holder's pid
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return GpuClaim(gpu, path, handle)


def claim_gpu(gpus: Sequence[str], lock_dir: Path, *, poll_seconds: float = 5.0) -> GpuClaim:
    """The first of `gpus` no other process holds, locked for as long as the returned claim's handle stays open;
    while all are held, wait for one, checking every `poll_seconds`."""
    if not gpus:
        raise ValueError(f"claim_gpu: no GPUs to claim (gpus={list(gpus)!r}); lock_dir={lock_dir}")
    lock_dir.mkdir(parents=True, exist_ok=True)
    warned = False
    while True:
        for gpu in gpus:
            claim = _try_claim(gpu, lock_dir)
            if claim is not None:
                return claim
        if not warned:
            holders = ", ".join(f"{gpu} by pid {_holder(gpu, lock_dir)}" for gpu in gpus)
            log.warning(
                "all %d GPUs are held (%s); waiting for one to free, checking every %gs",
                len(gpus),
                holders,
                poll_seconds,
            )
            warned = True
        time.sleep(poll_seconds)


def _holder(gpu: str, lock_dir: Path) -> str:
    """The pid written in a GPU's lock file, or '?' when none is (yet)."""
    try:
        return lock_path(gpu, lock_dir).read_text().strip() or "?"
    except OSError:
        return "?"


def pin_one_gpu(lock_dir: Path) -> str | None:
    """Claim one free GPU for the rest of this process and make it the only one CUDA sees; return its entry.
    None, changing nothing, under a distributed launcher (it gives each process its GPU already) or where fewer
    than two GPUs are visible."""
    if any(variable in os.environ for variable in LAUNCHER_VARIABLES):
        return None
    gpus = visible_gpus()
    if len(gpus) < 2:
        return None
    torch = sys.modules.get("torch")  # not imported: nothing of torch's can have started CUDA yet
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError(
            "pin_one_gpu: CUDA is already initialised and has read CUDA_VISIBLE_DEVICES; call it at the start of "
            "the stage, before any CUDA call"
        )
    claim = claim_gpu(gpus, lock_dir)
    _claims.append(claim)
    os.environ["CUDA_VISIBLE_DEVICES"] = claim.gpu
    log.info("pinned to GPU %s of %d (lock %s)", claim.gpu, len(gpus), claim.path)
    return claim.gpu
