"""Nothing lost when things go wrong: killed stages, reruns, bad params, unsafe files and the network.

The pipeline tests run the real dvc.yaml stages in a copy of the tiny project (pipeline_helpers), with
tests/hooks/sitecustomize.py loaded into the stage scripts to kill them at a known write or block the network.
The reference for "identical" is the untouched first run, `built_project`.
"""

from __future__ import annotations

import ast
import hashlib
import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from pipeline_helpers import (
    REPO,
    built_project,
    copy_project,
    heavy_imports,
    ran_stages,
    read_log,
    run,
    run_recording_imports,
    stage_env,
    stage_names,
)

from synthratio.classify.experiment import load_classifier
from synthratio.config import params_from_dict
from synthratio.layout import classifier_path
from synthratio.runtime import load_safetensors


@pytest.fixture
def project(tmp_path_factory) -> Path:
    """A copy of the tiny build for this test alone: no test sees what another killed, edited or reran."""
    return copy_project(tmp_path_factory, "reliability")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The first, uninterrupted run (read only)."""
    return built_project(tmp_path_factory)


def stage_outs(project: Path, stage: str) -> list[Path]:
    """Outputs of `stage` as dvc.lock records them (metrics included)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return [Path(out["path"]) for out in lock["stages"][stage]["outs"]]


def digests(root: Path, paths: list[Path]) -> dict[str, str]:
    """sha256 of every file under `paths` (files or folders), keyed by path relative to `root`."""
    files = []
    for path in paths:
        full = root / path
        files += sorted(p for p in full.rglob("*") if p.is_file()) if full.is_dir() else [full]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def paths(project: Path) -> dict[str, str]:
    """The project's params.yaml `paths` section."""
    return yaml.safe_load((project / "params.yaml").read_text())["paths"]


FINETUNE, GENERATE = "finetune@100-0", "generate@100-0"  # the full cohort's generator of seed 0


def classifier_stage(project: Path) -> str:
    return stage_names(project, "train_classifier@")[0]


def replaced_names(log: Path, suffix: str) -> list[str]:
    """File names of the os.replace targets ending in `suffix` that the stage scripts logged."""
    return [Path(line.split(" ", 2)[2]).name for line in read_log(log) if line.endswith(suffix)]


def run_killed(project: Path, tmp: Path, stage: str, script: str, pattern: str, count: int) -> None:
    """Force-run `stage` with its script SIGKILLed right after the `count`-th atomic write matching `pattern`."""
    done = run(
        ["dvc", "repro", "-f", "-s", stage], project, env=stage_env(tmp, kill=(script, pattern, count)), check=False
    )
    # DVC reports the SIGKILL as -9 when $SHELL execs the script (bash), as 137 when the shell outlives it (dash)
    killed = re.search(r"exited with (-9|137)\b", done.stderr)
    assert done.returncode != 0 and killed, f"{stage} was not killed:\n{done.stdout}\n{done.stderr}"


def rerun(project: Path, stage: str, env: dict[str, str] | None = None) -> None:
    """Run `stage` again for real.

    -f: a plain repro may restore the reference run's identical outputs from the cache.
    """
    output = run(["dvc", "repro", "-f", "-s", stage], project, env=env).stdout
    assert ran_stages(output) == [stage], output


def status(project: Path, stage: str) -> str:
    return run(["dvc", "status", stage], project).stdout


# --- a stage killed mid-run restarts or resumes and never leaves a partial result that looks whole ---


@pytest.mark.slow
def test_killed_classifier_leaves_no_result_and_reruns_to_the_same_bytes(project, reference, tmp_path):
    """Killed right after the first seed's weights: the seeds' metrics, written last, never appear, so
    neither DVC nor the report takes the half-done stage as done; the rerun gives the reference's bytes."""
    stage = classifier_stage(project)
    outs = stage_outs(project, stage)
    metrics = next(out for out in outs if out.suffix == ".json")
    weights = next(
        out
        for out in outs
        if out.name.startswith("ratio_") and out.parent.name == Path(paths(project)["classifiers"]).name
    )
    live = paths(project)["live"]
    run_killed(project, tmp_path, stage, "train_classifier.py", "*.safetensors", 1)
    assert replaced_names(tmp_path / "replaced.log", ".safetensors") == ["seed_0.safetensors"]  # killed right after it
    assert not (project / metrics).exists(), "the metrics of a killed stage exist"
    assert sorted(p.name for p in (project / weights).iterdir()) == ["seed_0.safetensors"], (
        "a temporary file or later seed left"
    )
    assert stage in status(project, stage)  # DVC does not take the half-written result as done
    rerun(project, stage)
    non_live = [out for out in outs if out.parts[0] != live]
    assert digests(project, non_live) == digests(reference, non_live)
    assert "up to date" in status(project, stage)


@pytest.mark.slow
def test_killed_generate_keeps_no_output_and_resumes_to_the_same_images(project, reference, tmp_path):
    stage = GENERATE
    outs = stage_outs(project, stage)
    folders = [out for out in outs if (reference / out).is_dir()]
    assert folders, f"{stage} records no output folder in dvc.lock: {outs}"
    killed, resumed = tmp_path / "killed", tmp_path / "resumed"
    killed.mkdir(), resumed.mkdir()
    run_killed(project, killed, stage, "generate.py", "*.png", 3)
    first = replaced_names(killed / "replaced.log", ".png")
    assert len(first) == 3
    for out in outs:
        assert not (project / out).exists(), f"{out} exists after {stage} was killed with 3 of 8 images"
    assert stage in status(project, stage)
    rerun(project, stage, env=stage_env(resumed))
    second = [name for name in replaced_names(resumed / "replaced.log", ".png") if not name.startswith("samples_")]
    total = len(list((reference / folders[0]).rglob("*.png")))
    assert len(second) == total - 3 and not set(second) & set(first), (
        f"the rerun sampled {second}; the killed run had finished {first}: it should sample only the rest"
    )
    assert digests(project, folders) == digests(reference, folders)
    assert "up to date" in status(project, stage)


@pytest.mark.slow
def test_killed_finetune_resumes_from_its_checkpoint_to_the_same_model(project, reference, tmp_path):
    """Checkpoints every step (finetune.checkpoint_every is no part of the training's fingerprint, so the model
    must equal the reference's), killed once the first checkpoint is in place."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["finetune"]["checkpoint_every"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    outs = stage_outs(project, FINETUNE)
    model = Path(params["paths"]["diffusion_model"]) / "keep_100_gen_0"
    run_killed(project, tmp_path, FINETUNE, "finetune.py", f"*{model.name}.checkpoints", 1)
    for out in outs:
        assert not (project / out).exists() or out.parts[0] == params["paths"]["live"], f"{out} exists after the kill"
    rerun(project, FINETUNE)
    report = json.loads((project / params["paths"]["metrics"] / "finetune" / "keep_100_gen_0.detail.json").read_text())
    assert report["resumed_from_step"] == 1 and report["steps"] == params["finetune"]["steps"], report
    assert digests(project, [model]) == digests(reference, [model])
    assert "up to date" in status(project, FINETUNE)


# --- identical metrics twice on the CPU; nothing touches the network unless a hub id is configured ---


@pytest.fixture(scope="module")
def offline_rerun(tmp_path_factory) -> tuple[str, Path, Path]:
    """A forced rerun of every stage whose library could phone home, with internet sockets blocked, in a copy of
    its own: (dvc's output, the folder of the guard's logs, the project)."""
    project = copy_project(tmp_path_factory, "offline")
    logs = tmp_path_factory.mktemp("offline")
    stages = [FINETUNE, GENERATE, "evaluate_synthetic@100-0", classifier_stage(project)]
    output = run(["dvc", "repro", "-f", "-s", *stages], project, env=stage_env(logs, block_network=True)).stdout
    assert ran_stages(output) == stages, output
    return output, logs, project


# Tries what a library phoning home would do, on loopback only (where nothing listens: without the guard it
# is refused locally, so the probe never reaches a network), and what the guard must leave alone (a Unix socket).
NETWORK_PROBE = """
import socket
for family, address in ((socket.AF_INET, ("127.0.0.1", 9)), (socket.AF_UNIX, "/nonexistent/probe.sock")):
    for method in ("connect", "connect_ex"):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                getattr(probe, method)(address)
            except OSError:
                pass
try:
    socket.getaddrinfo("localhost", 80)
except OSError:
    pass
"""
GUARDED = ["connect ('127.0.0.1', 9)", "connect_ex ('127.0.0.1', 9)", "getaddrinfo 'localhost'"]


def probe_network_guard(folder: Path, env: dict[str, str], script: str = "stages/probe.py") -> list[str]:
    """Run NETWORK_PROBE as `script` (relative to `folder`, as dvc runs a stage) under `env`; what the guard
    logged, without each line's pid."""
    (folder / script).parent.mkdir(parents=True, exist_ok=True)
    (folder / script).write_text(NETWORK_PROBE)
    run([sys.executable, script], folder, env=env)
    log = Path(env.get("SYNTHRATIO_TEST_NO_NETWORK", folder / "network.log"))
    return [f"{line.split(' ', 2)[0]} {line.split(' ', 2)[2]}" for line in read_log(log)]


def test_the_network_guard_logs_a_stage_that_tries_and_leaves_other_scripts_alone(tmp_path):
    """Positive control for the test below: an empty log means something only if a stage that tries is logged."""
    env = stage_env(tmp_path, block_network=True)
    assert probe_network_guard(tmp_path, env) == [f"probe.py {line}" for line in GUARDED]
    (tmp_path / "network.log").unlink()
    assert (
        probe_network_guard(tmp_path, env, "tools/probe.py") == []
    )  # not a stage: dvc, git and the tests are untouched
    assert probe_network_guard(tmp_path, stage_env(tmp_path)) == []  # guard off unless asked for


@pytest.mark.slow
def test_stages_run_with_the_network_blocked_and_never_try_it(offline_rerun, tmp_path):
    _, logs, _ = offline_rerun
    assert read_log(logs / "network.log") == []
    # the same guard, loaded the same way, does log a stage that tries (else the empty log above proves nothing)
    assert probe_network_guard(tmp_path, stage_env(tmp_path, block_network=True)) == [
        f"probe.py {line}" for line in GUARDED
    ]


@pytest.mark.slow
def test_forced_rerun_on_the_cpu_gives_identical_models_images_and_metrics(reference, offline_rerun):
    output, _, project = offline_rerun
    stages = ran_stages(output)
    live = paths(project)["live"]
    # every output but the training curves (dvclive records wall-clock timestamps) and throughput timings
    outs = [
        out
        for stage in stages
        for out in stage_outs(project, stage)
        if out.parts[0] != live
        and not (out.name.endswith(".detail.json") and out.parent.name in ("finetune", "generate"))
        and not out.name.startswith("samples_")
    ]
    assert any((reference / out).is_dir() for out in outs)  # the model and image folders are among them
    assert digests(project, outs) == digests(reference, outs)


@pytest.mark.slow
def test_hub_id_offline_fails_naming_it_and_stays_off_the_network(project, tmp_path):
    """A latent backend whose pretrained model is a hub id, with HF_HUB_OFFLINE=1: a clear error, no socket."""
    hub_id = "example-org/not-downloaded-sd"
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["finetune"].update(backend="latent", pretrained=hub_id)
    bad = tmp_path / "project"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(bad)], cwd=project, check=True)
    (bad / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (bad / "data/prepared").symlink_to(project / "data/prepared")  # read before the model is loaded
    env = {**stage_env(tmp_path, block_network=True), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "stages/finetune.py", "--keep", "100", "--generator", "0"]
    done = run(command, bad, env=env, check=False)
    assert done.returncode != 0, done.stdout
    message = done.stderr.strip().splitlines()[-1]
    assert hub_id in message and "offline" in message.lower(), done.stderr[-2000:]
    assert read_log(tmp_path / "network.log") == []


# --- params are validated before any work ---


@pytest.mark.parametrize(
    "script, args, section, key, value",
    [
        ("finetune.py", ["--keep", "100", "--generator", "0"], "finetune", "beta_schedule", "cosine"),
        ("generate.py", ["--keep", "100", "--generator", "0"], "generate", "num_images", -8),
        ("train_classifier.py", ["--ratio", "50", "--keep", "100", "--generator", "0"], "classifier", "arch", "vgg"),
    ],
)
def test_bad_params_stop_a_stage_before_any_work(tmp_path, tmp_path_factory, script, args, section, key, value):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params[section][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    record = tmp_path_factory.mktemp("imports") / "modules.txt"
    done, imported = run_recording_imports(REPO / "stages" / script, args, tmp_path, record)
    assert done.returncode == 2
    assert done.stderr.startswith("error: params.yaml: ") and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert f"{section}.{key}={value!r}" in done.stderr.strip().splitlines()[-1], done.stderr[-2000:]
    assert [p.name for p in tmp_path.rglob("*")] == ["params.yaml"], "the stage wrote files before failing"
    assert heavy_imports(imported) == [], f"{script} imported these before rejecting {section}.{key}"


# --- weights load only as safetensors or with weights_only ---

UNSAFE = "unsafe loading"


def passes_literal(keywords: dict[str, ast.expr], key: str, value: bool) -> bool:
    """Whether a call's keywords set `key` to the literal `value` (True or False)."""
    return isinstance(keywords.get(key), ast.Constant) and keywords[key].value is value


def unsafe_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """Calls that could unpickle code: torch.load without weights_only=True, pickle loads, np.load with
    allow_pickle=True, saving weights without safetensors, accelerate's pickled custom checkpoints."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module in ("torch", "pickle")
            and any(a.name in ("load", "loads") for a in node.names)
        ):
            found.append((node.lineno, f"from {node.module} import load"))
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        if (
            (name == "torch.load" and not passes_literal(keywords, "weights_only", True))
            or name in ("pickle.load", "pickle.loads")
            or (name.endswith("load") and passes_literal(keywords, "allow_pickle", True))
            or passes_literal(keywords, "safe_serialization", False)
            or passes_literal(keywords, "use_safetensors", False)
            or name.endswith("register_for_checkpointing")
        ):
            found.append((node.lineno, ast.unparse(node)[:120]))
    return found


def test_the_unsafe_call_finder_finds_them():
    source = (
        "import torch, pickle\ntorch.load(f)\ntorch.load(f, weights_only=False)\npickle.loads(b)\n"
        "np.load(f, allow_pickle=True)\npipe.save_pretrained(d, safe_serialization=False)\n"
        "accelerator.register_for_checkpointing(ema)\ntorch.load(f, weights_only=True)\n"
    )
    assert [line for line, _ in unsafe_calls(ast.parse(source))] == [2, 3, 4, 5, 6, 7]


def test_no_code_loads_weights_unsafely():
    found = [
        f"{path.relative_to(REPO)}:{line}: {call}"
        for folder in ("src", "stages", "scripts")
        for path in sorted((REPO / folder).rglob("*.py"))
        for line, call in unsafe_calls(ast.parse(path.read_text()))
    ]
    assert not found, f"{UNSAFE}: " + "; ".join(found)


class _RunsCode:
    """Unpickling this creates `marker`: proof that a loader executed the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("loader", ["runtime.load_safetensors", "load_classifier"])
def test_pickle_disguised_as_safetensors_is_refused_unexecuted(tmp_path, loader):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["paths"]["classifiers"] = str(tmp_path)
    params = params_from_dict(raw)
    seed = params.evaluate.encoder_seed
    path = classifier_path(params, ratio=0, seed=seed, keep=100)
    marker = tmp_path / "executed"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"weight": _RunsCode(marker)}))
    with pytest.raises(ValueError) as error:
        if loader == "load_classifier":
            load_classifier(params, seed=seed, ratio=0, device=torch.device("cpu"), keep=100)
        else:
            load_safetensors(path)
    assert not marker.exists()
    assert str(path) in str(error.value) and "safetensors" in str(error.value), error.value
