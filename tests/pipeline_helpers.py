"""Helpers for tests that run the real pipeline: a temporary copy of the repository on tiny params.

`built_project` runs `dvc repro` once per test run (one worker builds, the others wait for it) and commits the
result; each test that reruns stages or applies experiments takes its own `copy_project` of it, so no test sees
what another left behind, whatever the order or the worker.
`stage_env` adds the fault injection of tests/hooks/sitecustomize.py (network block, kill at a write).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import yaml
from filelock import FileLock

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
    "sweep": {"ratios": [50, 100], "seeds": [0, 1], "generator_seeds": [0, 1]},
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


# What a stage must not import before it has read and checked params.yaml: each takes a second or more.
HEAVY_MODULES = ("torch", "torchvision", "diffusers", "transformers", "accelerate", "sklearn", "scipy", "pandas",
                 "matplotlib", "dvc")  # fmt: skip
# Runs a script as `python script args` would, and writes the names of the modules it had imported when it exited
# (by error or not) to the file $SYNTHRATIO_TEST_IMPORTS.
_RECORD_IMPORTS = """import atexit, os, runpy, sys
atexit.register(lambda: open(os.environ["SYNTHRATIO_TEST_IMPORTS"], "w").write("\\n".join(sorted(sys.modules))))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_recording_imports(
    script: Path, args: list[str], cwd: Path, record: Path
) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `script` with `args` in `cwd` (no check): its result, and the modules it had imported when it exited,
    recorded in `record` (a file outside `cwd`)."""
    command = [sys.executable, "-c", _RECORD_IMPORTS, str(script), *args]
    done = run(command, cwd, {"SYNTHRATIO_TEST_IMPORTS": str(record)}, check=False)
    imported = set(record.read_text().split()) if record.is_file() else set()
    assert "synthratio.config" in imported, f"no imports recorded for {script}: {done.stderr[-2000:]}"
    return done, imported


def heavy_imports(imported: set[str]) -> list[str]:
    return [name for name in HEAVY_MODULES if name in imported]


def read_log(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def commit_all(root: Path, message: str) -> None:
    run(["git", *GIT_USER, "add", "-A"], root)
    run(["git", *GIT_USER, "commit", "-qm", message], root)


def project_files(with_results: bool = False) -> list[str]:
    """The repository's files git would commit (tracked and untracked, not ignored): what a tiny project is made
    of, so without the committed results (dvc.lock, metrics/, plots/) unless `with_results`."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    return sorted(
        name
        for name in filter(None, listed)
        if (REPO / name).is_file()
        and (with_results or (not name.startswith(("metrics/", "plots/")) and name != "dvc.lock"))
    )


def copy_repository(root: Path, with_results: bool = False) -> None:
    """project_files(with_results) copied into `root`, as they are in the working tree."""
    for name in project_files(with_results):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)


def tiny_project(root: Path, overrides: Mapping[str, Mapping] = TINY) -> Path:
    """The repository's files (tracked and untracked, not ignored) in `root` with `overrides` applied to
    params.yaml, committed to a fresh git repository, and the phantom written to data/raw. Nothing run yet.

    data.dvc keeps the default phantom's hash: repro records the tiny phantom's, as it does for real data."""
    copy_repository(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    commit_all(root, "tiny")
    run([sys.executable, "scripts/make_phantom.py"], root)
    return root


def build_key(overrides: Mapping[str, Mapping] = TINY) -> str:
    """Hash of what the tiny build is made from: the files tiny_project copies and the overrides. The tests are
    left out: they change nothing `dvc repro` builds, and a run of them may write one (tests/mutation/passed.json)."""
    digest = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode())
    for name in (name for name in project_files() if not name.startswith("tests/")):
        digest.update(name.encode() + b"\0" + (REPO / name).read_bytes())
    return digest.hexdigest()[:16]


def shared_temp(tmp_path_factory) -> Path:
    """The temporary folder every worker of this test run shares: the run's base under `pytest -n`, whose
    workers each get a folder below it, else this process's own."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_project(tmp_path_factory) -> Path:
    """The tiny project after one `dvc repro`, with dvc.lock, metrics and plots committed: built once per test
    run and shared by every worker (the first to ask builds it under a file lock, the others wait), keyed by
    build_key so a stale build is never reused. Read only: copy it (`copy_project`) before running anything."""
    root = shared_temp(tmp_path_factory) / f"tiny-{build_key()}"
    done = root.with_name(root.name + ".done")  # beside, not inside: no untracked file in the project
    with FileLock(str(root) + ".lock"):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)  # what a worker that died mid-build left
            root.mkdir()
            tiny_project(root)
            run(["dvc", "repro"], root)
            commit_all(root, "repro")
            done.touch()
    return root


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


def train_patients(project: Path, label: str = "CNV") -> set[int]:
    """Raw patient ids of the prepared training scans of `label`, read from index.csv."""
    index = pd.read_csv(project / "data/prepared/index.csv")
    return set(index.loc[(index["split"] == "train") & (index["class"] == label), "patient_id"])


def stage_names(project: Path, prefix: str) -> list[str]:
    """Names of the stages in `project`'s dvc.yaml that start with `prefix` (e.g. "train_classifier@50")."""
    listed = run(["dvc", "stage", "list", "--name-only"], project).stdout.split()
    return [name for name in listed if name.startswith(prefix)]


def ran_stages(output: str) -> list[str]:
    """Stages that `dvc repro`/`dvc exp run` output says it ran."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def unchanged_stages(output: str) -> list[str]:
    """Stages that `dvc repro` output says it skipped ("Stage 'x' didn't change, skipping")."""
    return [
        line.split("'")[1] for line in output.splitlines() if line.startswith("Stage '") and "didn't change" in line
    ]


def assert_nothing_ran(project: Path, output: str, stages: list[str] | None = None) -> None:
    """`dvc repro` output ran no stage and named each of `stages` (default: every stage of dvc.yaml) unchanged.
    The second half is the positive control: were DVC's wording not the one ran_stages reads, it would fail."""
    expected = stages if stages is not None else stage_names(project, "")
    assert ran_stages(output) == [], output
    assert sorted(unchanged_stages(output)) == sorted(expected), output


def start_queue(project: Path, jobs: int, env: Mapping[str, str] | None = None) -> None:
    """`dvc queue start -j jobs` (its workers and their stages get `env` too), its output in
    .dvc/tmp/queue-start.log: the workers it leaves running in the background would hold a captured stdout open,
    and `run` would wait for them to exit rather than for dvc."""
    log = project / ".dvc" / "tmp" / "queue-start.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=project, env=base_env(env), stdout=out,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, f"dvc queue start failed ({done.returncode}):\n{log.read_text()[-3000:]}"


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
