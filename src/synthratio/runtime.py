"""Device choice, thread settings, atomic file writes and safe weight loading shared by every stage."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from synthratio.config import RuntimeConfig


def setup(runtime: RuntimeConfig) -> torch.device:
    """Configure logging and torch threads; return the device the stage runs on."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params.yaml: runtime.device='cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    if runtime.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so a killed stage never leaves half a file."""
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def write_atomically(path: Path, write) -> None:
    """Call write(temporary_path) and rename the result to path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_safetensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file. Never unpickles: a file that is not safetensors (a pickle renamed,
    a truncated copy) raises naming the file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as error:
        raise ValueError(f"{path}: not a valid safetensors file ({error}); weights load from safetensors only, never pickle") from error


def open_live(folder: Path):
    """dvclive logger for a stage's training curves; never rewrites dvc.yaml (dvc.yaml declares the plots)."""
    from dvclive import Live  # imported here so the library runs where dvclive is not installed (GPU boxes)

    return Live(dir=str(folder), dvcyaml=False, save_dvc_exp=False, report=None)
