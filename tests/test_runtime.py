import io
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from synthratio import runtime
from synthratio.config import RuntimeConfig
from synthratio.layout import run_name
from synthratio.runtime import load_safetensors, progress_bar, set_progress, setup, write_atomically, write_json


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


def test_load_safetensors_round_trip_and_missing_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.arange(3.0)}, str(path))
    assert torch.equal(load_safetensors(path)["w"], torch.arange(3.0))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_safetensors(tmp_path / "missing.safetensors")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    "stream, enabled, tqdm_disable, rank, shown",
    [
        (Terminal, True, None, None, True),
        (io.StringIO, True, None, None, False),  # a log file or `dvc queue logs`: no carriage-return lines
        (Terminal, True, "1", None, False),
        (Terminal, False, None, None, False),  # runtime.progress: false
        (Terminal, True, None, "1", False),  # not the main process under a launcher: one bar, the main one's
    ],
)
def test_bars_show_only_on_a_terminal(monkeypatch, stream, enabled, tqdm_disable, rank, shown):
    if tqdm_disable is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", tqdm_disable)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr(runtime, "_progress", {"enabled": True})  # restored after the test
    set_progress(enabled)  # what setup() does with runtime.progress, once per process
    out = stream()
    with progress_bar(range(3), file=out) as bar:
        assert bar.disable is not shown
        assert list(bar) == [0, 1, 2]
    assert bool(out.getvalue()) is shown


def test_bars_are_off_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_bar(total=3).disable


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
