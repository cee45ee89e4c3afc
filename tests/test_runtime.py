import io
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import tqdm.std
from safetensors.torch import save_file

from synthratio import runtime
from synthratio.config import RuntimeConfig
from synthratio.layout import run_name
from synthratio.runtime import (
    _duration,
    load_safetensors,
    progress_bar,
    progress_shown,
    set_progress,
    setup,
    write_atomically,
    write_json,
)


def test_write_json_replaces_whole_file(tmp_path):
    path = tmp_path / "metrics" / "m.json"
    write_json(path, {"b": 1, "a": 0.5})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": 1}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"old": True})

    def crash(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, crash)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_setup_device_and_names():
    assert setup(RuntimeConfig(device="cpu")).type == "cpu"
    assert run_name(50, 25, 1) == "ratio_50_keep_25_gen_1" and run_name(0, 25) == "ratio_0_keep_25"


def test_setup_pins_each_stage_to_its_own_gpu_of_several(tmp_path, monkeypatch):
    """With a stub list of two GPUs (no GPU needed): setup claims the first free one and narrows
    CUDA_VISIBLE_DEVICES to it; a second stage process, while the first runs, gets the other; device cpu
    claims nothing."""
    from synthratio import devices

    claims: list = []
    monkeypatch.setattr(devices, "_claims", claims)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")
    for name in devices.LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    locks = tmp_path / "locks"
    setup(RuntimeConfig(device="cpu", gpu_locks=str(locks)))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4,7" and not locks.exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert setup(RuntimeConfig(device="auto", gpu_locks=str(locks))).type == "cuda"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "4" and [claim.gpu for claim in claims] == ["4"]
    other = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, torch; from synthratio.config import RuntimeConfig; from synthratio.runtime import setup; "
            "torch.cuda.is_available = lambda: True; "
            f"setup(RuntimeConfig(device='cuda', gpu_locks={str(locks)!r})); print(os.environ['CUDA_VISIBLE_DEVICES'])",
        ],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "4,7"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == "7"
    for claim in claims:
        claim.handle.close()


def test_load_safetensors_round_trip_and_missing_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.arange(3.0)}, str(path))
    assert torch.equal(load_safetensors(path)["w"], torch.arange(3.0))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_safetensors(tmp_path / "missing.safetensors")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def progress_settings(monkeypatch, enabled=True, tqdm_disable=None, rank=None):
    """runtime.progress, TQDM_DISABLE and the launcher's RANK as a stage would see them; undone after the test."""
    if tqdm_disable is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", tqdm_disable)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)  # what accelerate launch and torchrun set in each process
    monkeypatch.setattr(runtime, "_progress", {"enabled": True})  # restored after the test
    set_progress(enabled)  # what setup() does with runtime.progress, once per process


LOG_LINE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO synthratio\.progress: "


@pytest.mark.parametrize(
    "stream, enabled, tqdm_disable, rank, shown",
    [
        (Terminal, True, None, None, "bar"),
        (io.StringIO, True, None, None, "lines"),  # a log file or `dvc queue logs`: lines, no carriage returns
        (Terminal, True, "1", None, ""),
        (io.StringIO, True, "1", None, ""),
        (Terminal, False, None, None, ""),  # runtime.progress: false
        (io.StringIO, False, None, None, ""),
        (Terminal, True, None, "1", ""),  # not the main process under a launcher: one bar, the main one's
        (io.StringIO, True, None, "1", ""),
    ],
)
def test_bars_show_on_a_terminal_and_as_lines_in_a_log(monkeypatch, stream, enabled, tqdm_disable, rank, shown):
    progress_settings(monkeypatch, enabled, tqdm_disable, rank)
    out = stream()
    with progress_bar(range(3), desc="count", file=out) as bar:
        assert list(bar) == [0, 1, 2]
    assert progress_shown(out) is (shown == "bar")  # what clean-fid and diffusers are told: silent in a log
    text = out.getvalue()
    if shown == "bar":
        assert "\rcount: 100%|" in text and "| 3/3 [" in text
    elif shown == "lines":  # the first state and the last, no bar characters
        lines = text.splitlines()
        assert "\r" not in text and "|" not in text and len(lines) == 2, text
        assert re.match(LOG_LINE + r"count: 0/3 \(0%\), elapsed 00:00, \?it/s, ETA \?$", lines[0]), lines
        assert re.match(LOG_LINE + r"count: 3/3 \(100%\), elapsed 00:00, [\d.]+it/s, ETA 00:00$", lines[1]), lines
    else:
        assert text == ""


def test_bars_in_a_log_write_a_line_per_interval_with_the_postfix(monkeypatch):
    """One line at the start, then at most one per log_interval seconds of the clock, and the final state
    with the overall rate and the last postfix; set_postfix (every step here) writes no line of its own."""
    progress_settings(monkeypatch)
    clock = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])  # the clock every new bar reads
    out = io.StringIO()
    bar = progress_bar(total=20, desc="finetune", unit="step", file=out, log_interval=5)
    for step in range(20):
        clock[0] += 1.0  # a step takes one second
        bar.update()
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}")
    bar.close()
    lines = [re.sub(LOG_LINE, "", line) for line in out.getvalue().splitlines()]
    assert [int(re.match(r"finetune: (\d+)/20 ", line)[1]) for line in lines] == [0, 5, 10, 15, 20], lines
    assert lines[2] == "finetune: 10/20 (50%), elapsed 00:10, 1.00step/s, ETA 00:10, loss=0.1111"
    assert lines[-1] == "finetune: 20/20 (100%), elapsed 00:20, 1.00step/s, ETA 00:00, loss=0.0500"


def test_bars_write_to_stderr_as_lines_where_it_is_a_log(monkeypatch):
    progress_settings(monkeypatch)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not progress_shown()  # libraries' own bars stay off
    for _ in progress_bar(range(2), desc="decode"):
        pass
    assert re.fullmatch(f"{LOG_LINE}decode: 0/2 .*\n{LOG_LINE}decode: 2/2 .*\n", sys.stderr.getvalue())


STAGE = """
import sys
from synthratio.runtime import run_stage
sys.argv = ["stages/finetune.py", "--keep", "100", "--generator", "0"]
run_stage(lambda: {returned!r})
"""


@pytest.mark.parametrize(
    "returned, rank, logged",
    [
        ("trained 3 steps, final loss 0.0412", None, True),
        ("trained 3 steps, final loss 0.0412", "1", False),  # one line under a launcher, the main process's
        (None, None, False),  # finetune's other processes: nothing to say
    ],
)
def test_a_stage_ends_with_one_line_of_what_it_did_and_how_long_it_took(returned, rank, logged):
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "LOCAL_RANK")}
    if rank is not None:
        env["RANK"] = rank
    script = STAGE.format(returned=returned)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    if logged:
        line = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO synthratio: stage finetune --keep 100 --generator 0: "
        assert re.fullmatch(
            line + r"trained 3 steps, final loss 0\.0412 \(took \d+\.\ds; peak RSS \d+\.\d\d GiB\)\n", done.stderr
        ), done.stderr
    else:
        assert done.stderr == ""
    assert done.stdout == ""


@pytest.mark.parametrize("seconds, shown", [(4.21, "4.2s"), (59.94, "59.9s"), (632.4, "10m32s"), (7507, "2h05m07s")])
def test_durations_read_as_minutes_and_hours(seconds, shown):
    assert _duration(seconds) == shown


LOGS = """
import logging
from synthratio.config import RuntimeConfig
from synthratio.runtime import setup
setup(RuntimeConfig(device="cpu"))
logging.getLogger("stage").info("started")
logging.getLogger("stage").warning("slow")
"""


@pytest.mark.parametrize("rank, logged", [(None, ["INFO", "WARNING"]), ("1", ["WARNING"])])
def test_log_lines_carry_a_timestamp_and_other_processes_log_warnings_only(rank, logged):
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "LOCAL_RANK")}
    if rank is not None:
        env["RANK"] = rank  # what accelerate launch and torchrun set in each process
    done = subprocess.run([sys.executable, "-c", LOGS], env=env, capture_output=True, text=True, check=True)
    lines = done.stderr.splitlines()
    assert [line.split()[2] for line in lines] == logged, done.stderr
    assert all(
        re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING) stage: (started|slow)", line) for line in lines
    ), lines
