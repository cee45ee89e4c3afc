"""GPU claims on the CPU: fake CUDA_VISIBLE_DEVICES entries, real file locks, and other processes as the rival
claimants, as `dvc queue start -j 8` runs them."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch

from synthratio import devices

TIMEOUT = 10.0  # seconds a child may take to start and answer; far above what it needs
# A child that claims one of argv[1] (comma-separated) in argv[2], prints it, and holds it until stdin closes.
CLAIM = (
    "import logging, sys; from pathlib import Path; from synthratio import devices; logging.basicConfig(); "
    "claim = devices.claim_gpu(sys.argv[1].split(','), Path(sys.argv[2]), poll_seconds=0.05); "
    "print(claim.gpu, flush=True); sys.stdin.read()"
)
# A stage's start: pin_one_gpu, then print what CUDA will see, and hold the GPU until stdin closes.
PIN = (
    "import os, sys; from pathlib import Path; from synthratio import devices; devices.pin_one_gpu(Path(sys.argv[1])); "
    "print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); sys.stdin.read()"
)


@pytest.fixture(autouse=True)
def _own_claims(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[devices.GpuClaim]]:
    """A fresh claims list per test, its locks released after it, and no launcher variables around."""
    claims: list[devices.GpuClaim] = []
    monkeypatch.setattr(devices, "_claims", claims)
    for variable in devices.LAUNCHER_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    yield claims
    for claim in claims:
        claim.handle.close()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen]]:
    """Child processes started by a test, killed after it whatever happened."""
    started: list[subprocess.Popen] = []
    yield started
    for child in started:
        child.kill()
        child.communicate()


def start(children: list[subprocess.Popen], code: str, *args: str, visible: str | None = None) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key not in devices.LAUNCHER_VARIABLES}
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    children.append(child)
    return child


def first_line(child: subprocess.Popen, timeout: float = TIMEOUT) -> str | None:
    """The child's first line of output, or None when it prints none within `timeout` seconds."""
    ready, _, _ = select.select([child.stdout], [], [], timeout)
    return child.stdout.readline().strip() if ready else None


def release(child: subprocess.Popen) -> str:
    """Close the child's stdin so it exits, releasing its GPU; its stderr."""
    _, stderr = child.communicate(timeout=TIMEOUT)
    return stderr


@pytest.mark.parametrize(
    "visible, expected",
    [
        ("0,1,2", ["0", "1", "2"]),
        (" 0 , 1 ", ["0", "1"]),
        ("0,,1,", ["0", "1"]),
        ("GPU-aa:bb/1,GPU-cc", ["GPU-aa:bb/1", "GPU-cc"]),
        ("", []),
    ],
)
def test_visible_gpus_reads_cuda_visible_devices(monkeypatch, visible, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert devices.visible_gpus() == expected


def test_visible_gpus_counts_torch_devices_when_unset(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert devices.visible_gpus() == ["0", "1", "2"]


def test_claim_gpu_needs_a_gpu(tmp_path):
    with pytest.raises(ValueError, match="no GPUs"):
        devices.claim_gpu([], tmp_path)


def test_another_process_gets_the_next_gpu(tmp_path, _own_claims, children):
    claim = devices.claim_gpu(["0", "1", "2"], tmp_path / "locks")
    _own_claims.append(claim)
    assert claim.gpu == "0" and claim.path == tmp_path / "locks" / "gpu-0.lock"
    assert claim.path.read_text() == str(os.getpid())
    child = start(children, CLAIM, "0,1,2", str(tmp_path / "locks"))
    assert first_line(child) == "1"
    assert (tmp_path / "locks" / "gpu-1.lock").read_text() == str(child.pid)


def test_a_claimant_waits_while_all_are_held_and_gets_the_freed_gpu(tmp_path, children):
    holder = start(children, CLAIM, "0", str(tmp_path))
    assert first_line(holder) == "0"
    waiter = start(children, CLAIM, "0", str(tmp_path))
    assert first_line(waiter, timeout=1.0) is None  # polls every 0.05 s: it would have claimed a free GPU by now
    release(holder)
    assert first_line(waiter) == "0"
    assert f"all 1 GPUs are held (0 by pid {holder.pid}); waiting" in release(waiter)


def test_a_killed_holder_releases_its_gpu(tmp_path, _own_claims, children):
    holder = start(children, CLAIM, "0,1", str(tmp_path))
    assert first_line(holder) == "0"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=TIMEOUT)
    claim = devices.claim_gpu(["0", "1"], tmp_path)  # "1" if the dead holder's lock had stayed
    _own_claims.append(claim)
    assert claim.gpu == "0" and claim.path.read_text() == str(os.getpid())


def test_lock_file_names_are_safe_for_uuids_and_mig_ids_and_hold_only_the_pid(tmp_path, _own_claims):
    (tmp_path / "gpu-GPU-aa_bb_1.lock").write_text("123456789 left by an earlier holder")
    claims = [devices.claim_gpu(["GPU-aa:bb/1", "MIG-cc/2/0"], tmp_path) for _ in range(2)]
    _own_claims.extend(claims)
    assert [claim.gpu for claim in claims] == ["GPU-aa:bb/1", "MIG-cc/2/0"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gpu-GPU-aa_bb_1.lock", "gpu-MIG-cc_2_0.lock"]
    assert [claim.path.read_text() for claim in claims] == [str(os.getpid())] * 2


def test_pin_one_gpu_leaves_a_single_gpu_alone(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert devices.pin_one_gpu(tmp_path / "locks") is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and not (tmp_path / "locks").exists()


@pytest.mark.parametrize("variable", devices.LAUNCHER_VARIABLES)
def test_pin_one_gpu_leaves_a_launchers_process_alone(monkeypatch, tmp_path, variable):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setenv(variable, "0")
    assert devices.pin_one_gpu(tmp_path / "locks") is None
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5" and not (tmp_path / "locks").exists()


def test_pin_one_gpu_takes_the_first_free_gpu(monkeypatch, tmp_path, _own_claims):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert devices.pin_one_gpu(tmp_path) == "3"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert [claim.path for claim in _own_claims] == [tmp_path / "gpu-3.lock"]


def test_pin_one_gpu_refuses_once_cuda_started(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="already initialised"):
        devices.pin_one_gpu(tmp_path)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"


def test_concurrent_stages_pin_different_gpus(tmp_path, children):
    stages = [start(children, PIN, str(tmp_path), visible="0,1,2") for _ in range(3)]
    assert sorted(first_line(stage) for stage in stages) == ["0", "1", "2"]
