"""Helpers for tests that run the real pipeline: a temporary copy of the repository on tiny params.

`built_project` runs `dvc repro` once per test process (each `-n 2` worker) and commits the result; each test
module takes its own `copy_project` of it, so modules that rerun stages or apply experiments never disturb each
other.
`stage_env` adds the fault injection of tests/hooks/sitecustomize.py (network block, kill at a write).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "hooks"

TINY = {
    "runtime": {"progress": False, "threads": 1},
    "phantom": {"patients": {"train": 10, "val": 6, "test": 6}, "scans_per_patient": 2, "widths": [160], "height": 128},
    "prepare": {"val_fraction": 0.25, "test_fraction": 0.25, "workers": 1},
    "finetune": {"image_size": 16, "block_channels": [8, 16], "steps": 3, "batch_size": 4},
    "generate": {"num_images": 8, "inference_steps": 3, "batch_size": 4},
    "evaluate": {"kid_subset_size": 4},
    "classifier": {"image_size": 16, "epochs": 1, "batch_size": 8},
    "sweep": {"ratios": [50, 100], "seeds": [0, 1]},
    "report": {"bootstrap": 50},
}

GIT_USER = ["-c", "user.name=t", "-c", "user.email=t@t"]


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment with this venv's `dvc` and `python` first on PATH, and no DVC telemetry."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    env.update(extra or {})
    return env


def run(
    args: list[str], cwd: Path, env: Mapping[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a command in `cwd`; with `check`, fail the test showing the ends of its stdout and stderr."""
    done = subprocess.run(args, cwd=cwd, env=base_env(env), capture_output=True, text=True)
    if check:
        assert done.returncode == 0, (
            f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def stage_env(tmp: Path, *, block_network: bool = False, kill: tuple[str, str, int] | None = None) -> dict[str, str]:
    """Environment that loads tests/hooks/sitecustomize.py into the stage scripts.

    block_network: internet connects and name lookups are refused and logged to tmp/network.log.
    kill=(script, glob, n): `script` (e.g. "generate.py") SIGKILLs itself right after its n-th os.replace or
    os.rename onto a path matching glob. Every stage script's replace and rename targets go to tmp/replaced.log."""
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HOOKS), os.environ.get("PYTHONPATH", "")])),
        "SYNTHRATIO_TEST_REPLACE_LOG": str(tmp / "replaced.log"),
    }
    if block_network:
        env["SYNTHRATIO_TEST_NO_NETWORK"] = str(tmp / "network.log")
    if kill:
        env["SYNTHRATIO_TEST_KILL"] = ":".join(map(str, kill))
    return env


def read_log(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def commit_all(root: Path, message: str) -> None:
    run(["git", *GIT_USER, "add", "-A"], root)
    run(["git", *GIT_USER, "commit", "-qm", message], root)


def tiny_project(root: Path, overrides: Mapping[str, Mapping] = TINY) -> Path:
    """The repository's files (tracked and untracked, not ignored) in `root` with `overrides` applied to
    params.yaml, committed to a fresh git repository, and the phantom written to data/raw. Nothing run yet.

    data.dvc keeps the default phantom's hash: repro records the tiny phantom's, as it does for real data."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file() and not name.startswith(("metrics/", "plots/")) and name != "dvc.lock":
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    commit_all(root, "tiny")
    run([sys.executable, "scripts/make_phantom.py"], root)
    return root


_BUILT: dict[str, Path] = {}


def built_project(tmp_path_factory) -> Path:
    """The tiny project after one `dvc repro`, with dvc.lock, metrics and plots committed. Built once per
    session and shared: copy it (`copy_project`) before running anything in it."""
    if "tiny" not in _BUILT:
        root = tiny_project(tmp_path_factory.mktemp("built"))
        run(["dvc", "repro"], root)
        commit_all(root, "repro")
        _BUILT["tiny"] = root
    return _BUILT["tiny"]


def copy_project(tmp_path_factory, name: str) -> Path:
    """A private copy of `built_project` (git history, DVC cache and workspace), up to date as built."""
    target = tmp_path_factory.mktemp(name) / "project"
    shutil.copytree(
        built_project(tmp_path_factory),
        target,
        symlinks=True,
        ignore=lambda folder, names: ["tmp"] if Path(folder).name == ".dvc" else [],
    )
    return target


def stage_names(project: Path, prefix: str) -> list[str]:
    """Names of the stages in `project`'s dvc.yaml that start with `prefix` (e.g. "train_classifier@50")."""
    listed = run(["dvc", "stage", "list", "--name-only"], project).stdout.split()
    return [name for name in listed if name.startswith(prefix)]


def ran_stages(output: str) -> list[str]:
    """Stages that `dvc repro`/`dvc exp run` output says it ran."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def wait_for_queue(project: Path, names: list[str], timeout: float) -> str:
    """Poll `dvc queue status` until none of the experiments `names` is queued or running; the last status.
    On timeout, stop the workers and their runs (nothing left behind) and fail."""
    deadline = time.monotonic() + timeout
    while True:
        status = run(["dvc", "queue", "status"], project).stdout
        rows = [line.split() for line in status.splitlines() if line.split()[1:2] and line.split()[1] in names]
        if len(rows) == len(names) and all(row[-1] not in ("Queued", "Running") for row in rows):
            return status
        if time.monotonic() > deadline:
            run(["dvc", "queue", "stop", "--kill"], project, check=False)
            raise AssertionError(f"queued experiments {names} not done after {timeout:.0f} s:\n{status}")
        time.sleep(5)


def two_cpu_options() -> list[str]:
    """`accelerate launch` options that start two CPU processes (torchrun underneath, on gloo as the device is
    the CPU) on a free port; `--cpu --num_processes 2` would start ONE."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(port)]  # fmt: skip


def two_cpu_processes(script: Path, *args: str) -> list[str]:
    """Command running `script` with `args` in two CPU processes under accelerate."""
    return [sys.executable, "-m", "accelerate.commands.launch", *two_cpu_options(), str(script), *args]
