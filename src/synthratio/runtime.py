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
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tqdm.auto import tqdm
from tqdm.std import tqdm as std_tqdm

from synthratio.config import RuntimeConfig, exit_on_params_error
from synthratio.layout import detail_path

if TYPE_CHECKING:
    import torch

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# Seconds between progress lines where stderr is a log (a file, `dvc queue logs`): a 10-minute loop logs
# about 20 lines, enough to see it move and when it ends, not enough to bury the stage's other lines.
PROGRESS_LOG_INTERVAL = 30.0
# A progress line as tqdm formats it (tqdm.format_meter), without `{bar}`: no bar characters.
PROGRESS_LOG_FORMAT = (
    "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%), elapsed {elapsed}, {rate_fmt}, ETA {remaining}{postfix}"
)
_progress = {"enabled": True}  # runtime.progress, set once by setup()


def is_main_process() -> bool:
    """False in every process but the first under `accelerate launch` or torchrun (they set RANK, and
    LOCAL_RANK per machine), without starting accelerate's process group."""
    return int(os.environ.get("RANK") or os.environ.get("LOCAL_RANK") or 0) == 0


def setup_logging() -> None:
    """Timestamped log lines; under a launcher only the main process logs INFO, the others warnings and
    errors, so each event is one line."""
    level = logging.INFO if is_main_process() else logging.WARNING
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt=LOG_DATE_FORMAT)


def setup(runtime: RuntimeConfig) -> torch.device:
    """setup_logging() and torch's threads; return the device the stage runs on. With several GPUs visible the
    process first claims one and sees only it (devices.pin_one_gpu), before anything starts CUDA."""
    import torch

    from synthratio.devices import pin_one_gpu

    setup_logging()
    set_progress(runtime.progress)
    if runtime.device != "cpu":
        pin_one_gpu(Path(runtime.gpu_locks))
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
    """Whether a progress bar shows: progress on (_progress_on) and its stream (stderr) a terminal, tqdm's own
    disable=None rule. Libraries given this as their verbose flag (clean-fid, diffusers) stay silent in log
    files and `dvc queue logs`, which never get carriage-return lines."""
    stream = sys.stderr if file is None else file
    return _progress_on() and hasattr(stream, "isatty") and stream.isatty()


def _progress_on() -> bool:
    """runtime.progress (set_progress), TQDM_DISABLE unset, and the main process."""
    off = os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false")
    return _progress["enabled"] and is_main_process() and not off


def progress_bar(
    iterable: Iterable | None = None, *, log_interval: float = PROGRESS_LOG_INTERVAL, **kwargs: Any
) -> std_tqdm:
    """tqdm(iterable, **kwargs) for every loop of the pipeline: a bar on a terminal (progress_shown); where the
    stream (stderr) is not a terminal, timestamped log lines of the same figures, at the start, at most every
    `log_interval` seconds and at the end (_LogBar); nothing where progress is off (_progress_on)."""
    shown = progress_shown(kwargs.get("file"))
    if shown or not _progress_on():
        return tqdm(iterable, disable=not shown, **kwargs)
    timing = {"mininterval": log_interval, "maxinterval": log_interval, "bar_format": PROGRESS_LOG_FORMAT}
    return _LogBar(iterable, **{**timing, **kwargs, "file": _LogLines(kwargs.get("file") or sys.stderr)})


class _LogBar(std_tqdm):
    """A tqdm that writes log lines: set_postfix and set_description wait for the next timed line instead of
    writing one at once, the final state is close()'s line alone, and nested bars move no cursor."""

    def refresh(self, nolock=False, lock_args=None) -> bool:
        if self.total is not None and self.n >= self.total:
            return False  # close() writes it, with the overall rate and the last postfix
        return super().refresh(nolock=nolock, lock_args=lock_args)

    def set_postfix(self, ordered_dict=None, refresh=False, **kwargs) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s="", refresh=False) -> None:
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc=None, refresh=False) -> None:
        super().set_description(desc, refresh=False)

    def set_description_str(self, desc=None, refresh=False) -> None:
        super().set_description_str(desc, refresh=False)

    def moveto(self, n: int) -> None:
        pass  # a log has no cursor: each bar's lines follow one another


class _LogLines:
    """The file a _LogBar writes to: each display tqdm writes (`\\r<line><padding>`) becomes one line on
    `stream` in the stages' log format (LOG_FORMAT)."""

    def __init__(self, stream: TextIO) -> None:
        self.handler = logging.StreamHandler(stream)
        self.handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt=LOG_DATE_FORMAT))

    def write(self, text: str) -> None:
        line = " ".join(text.split())  # no padding: tqdm's rate is right-aligned in 5 columns
        if line:  # not the bare "\n" after close()'s line
            record = {"name": "synthratio.progress", "levelno": logging.INFO, "levelname": "INFO", "msg": line}
            self.handler.handle(logging.makeLogRecord(record))

    def flush(self) -> None:
        self.handler.flush()


def read_json(path: Path) -> Any:
    """A JSON file a stage wrote; a missing one names the file and the stage that writes it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: not found (run `dvc repro` for the stage that writes it)")
    return json.loads(Path(path).read_text())


def write_json(path: Path, data: Any, *, sort_keys: bool = True) -> None:
    """Write JSON through a temporary file and a rename, so a killed stage never leaves half a file; keys
    sorted, or in the order given (sort_keys=False: where the order is what a reader sees first)."""
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys) + "\n"))


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


def run_stage(main: Callable[[], str | None]) -> None:
    """Run a stage's main() (config.exit_on_params_error: bad params exit with status 2, one line per error). The
    line main() returns, what it did, ends the log with the stage, its arguments and the time it took:
    `stage finetune --keep 100 --generator 0: trained 600 steps, final loss 0.0412 (took 10m32s; peak RSS 4.12 GiB)`."""
    start = time.perf_counter()
    done = exit_on_params_error(main)
    if done is None:
        return
    if is_main_process():
        setup_logging()  # what the stage set up already, or the same format where it did not
        stage = " ".join([Path(sys.argv[0]).stem, *sys.argv[1:]])
        logging.getLogger("synthratio").info(
            "stage %s: %s (took %s; %s)", stage, done, _duration(time.perf_counter() - start), peak_memory()
        )


def peak_memory() -> str:
    """`peak RSS 1.23 GiB` of this process so far and, where torch used a GPU, its peak allocation: what a machine
    running the stage needs. RSS counts the pages of memory-mapped scans read so far too, which the kernel drops
    again under pressure. (Child processes are left out: importing torch alone starts a 0.4 GiB one.)"""
    import resource

    unit = 2**30 if sys.platform == "darwin" else 2**20  # ru_maxrss: bytes on macOS, KiB on Linux
    text = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / unit:.2f} GiB"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        text += f", peak CUDA {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
    return text


def rate(per_second: float) -> str:
    """A speed for a log line: 77.7, 1.5, and 0.011 where a step of a big model on a CPU takes a minute."""
    return f"{per_second:.1f}" if per_second >= 0.1 else f"{per_second:.2g}"


def _duration(seconds: float) -> str:
    """4.2s, 10m32s, 2h05m07s."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"
