"""Device choice, thread settings, logging, progress bars, atomic file and folder writes and safe weight
loading shared by every stage. torch is imported where it is used, so data/ and the stages' progress bars
need none of it."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tqdm.auto import tqdm

from synthratio.config import RuntimeConfig
from synthratio.layout import detail_path

if TYPE_CHECKING:
    import torch

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_progress = {"enabled": True}  # runtime.progress, set once by setup()


def is_main_process() -> bool:
    """False in every process but the first under `accelerate launch` or torchrun (they set RANK, and
    LOCAL_RANK per machine), without starting accelerate's process group."""
    return int(os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or 0) == 0


def setup_logging() -> None:
    """Timestamped log lines; under a launcher only the main process logs INFO, the others warnings and
    errors, so each event is one line."""
    level = logging.INFO if is_main_process() else logging.WARNING
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")


def setup(runtime: RuntimeConfig) -> torch.device:
    """setup_logging() and torch's threads; return the device the stage runs on."""
    import torch

    setup_logging()
    set_progress(runtime.progress)
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params.yaml: runtime.device='cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    if runtime.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a CUDA device that has bf16 (tensor cores, no loss scaling), else nothing: the CPU runs
    fp32 and deterministic."""
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_progress(enabled: bool) -> None:
    """Show progress bars or not (runtime.progress), for every bar of the process."""
    _progress["enabled"] = enabled


def progress_shown(file: TextIO | None = None) -> bool:
    """Whether a progress bar shows: runtime.progress (set_progress), TQDM_DISABLE unset, and its stream
    (stderr) a terminal, tqdm's own disable=None rule, in the main process only. Log files and
    `dvc queue logs` never get carriage-return lines."""
    stream = sys.stderr if file is None else file
    off = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")
    terminal = hasattr(stream, "isatty") and stream.isatty()
    return _progress["enabled"] and is_main_process() and not off and terminal


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """tqdm(iterable, **kwargs), shown only where progress_shown() says: every bar of the pipeline."""
    return tqdm(iterable, disable=not progress_shown(kwargs.get("file")), **kwargs)


def read_json(path: Path) -> Any:
    """A JSON file a stage wrote; a missing one names the file and the stage that writes it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: not found (run `dvc repro` for the stage that writes it)")
    return json.loads(Path(path).read_text())


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so a killed stage never leaves half a file."""
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n"))


def write_metrics(path: Path, figures: dict[str, Any], headline: tuple[str, ...]) -> None:
    """Two JSON files: at `path` (a DVC metric, what `dvc exp show` compares) the `headline` keys of
    `figures`, beside it at layout.detail_path (tracked, not a metric) all of them, timings included."""
    write_json(detail_path(path), figures)
    write_json(path, {key: figures[key] for key in headline if key in figures})


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


def load_safetensors(path: Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file. Never unpickles: a file that is not safetensors (a pickle renamed,
    a truncated copy) raises naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as error:
        raise ValueError(
            f"{path}: not a valid safetensors file ({error}); weights load from safetensors only, never pickle"
        ) from error


def open_live(folder: Path):
    """dvclive logger for a stage's training curves; never rewrites dvc.yaml (dvc.yaml declares the plots)."""
    from dvclive import Live  # imported here: only the training stages pay for it

    return Live(dir=str(folder), dvcyaml=False, save_dvc_exp=False, report=None)
