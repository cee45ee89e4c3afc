"""Beyond one machine: the accelerate configs, a DVC remote shared by two clones, queued experiments.

Runs in a copy of the tiny project (pipeline_helpers); the remote is a local folder, as S3, GCS or SSH would be.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType
from pipeline_helpers import (
    GIT_USER,
    REPO,
    assert_nothing_ran,
    copy_project,
    ran_stages,
    run,
    start_queue,
    two_cpu_options,
    wait_for_queue,
)

ACCELERATE = REPO / "configs" / "accelerate"


@pytest.mark.parametrize(
    "name, distributed, machines",
    [("single_gpu", "NO", 1), ("multi_gpu", "MULTI_GPU", 1), ("multi_node", "MULTI_GPU", 2)],
)
def test_accelerate_configs_load_and_are_consistent(name, distributed, machines):
    """accelerate's own loader takes each file (an unknown key raises); the process layout adds up."""
    config = load_config_from_file(str(ACCELERATE / f"{name}.yaml"))
    assert config.distributed_type == DistributedType(distributed)
    assert config.num_machines == machines and config.num_processes % machines == 0
    assert not config.use_cpu and config.mixed_precision == "no"  # precision is finetune.mixed_precision's
    if machines > 1:
        assert config.main_process_ip and config.main_process_port and config.num_processes > machines


@pytest.fixture
def project(tmp_path_factory) -> Path:
    """A copy of the tiny build for this test alone: no test sees params or experiments another left."""
    return copy_project(tmp_path_factory, "remote")


@pytest.fixture(scope="module")
def pushed_and_pulled(tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the tiny build and a `git clone` of it on "another machine", after `dvc push` here and
    `dvc pull` there."""
    project = copy_project(tmp_path_factory, "pushed")
    remote = tmp_path_factory.mktemp("remote_storage")
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], project)
    run(["git", *GIT_USER, "commit", "-qam", "shared remote"], project)
    run(["dvc", "push"], project)
    assert any(remote.rglob("*")), "dvc push sent nothing to the remote"
    clone = tmp_path_factory.mktemp("machine_b") / "project"
    run(["git", "clone", "-q", str(project), str(clone)], clone.parent)
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    folders = [out["path"] for out in lock["stages"]["finetune@100-0"]["outs"] if (project / out["path"]).is_dir()]
    assert folders and not any((clone / out).exists() for out in folders)  # git's files only, so far
    run(["dvc", "pull"], clone)
    return project, clone


@pytest.mark.slow
def test_second_clone_after_pull_is_up_to_date_and_runs_no_stage(pushed_and_pulled):
    project, second_clone = pushed_and_pulled
    assert "up to date" in run(["dvc", "status"], second_clone).stdout
    assert_nothing_ran(second_clone, run(["dvc", "repro"], second_clone).stdout)
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    for out in (out["path"] for stage in lock["stages"].values() for out in stage["outs"]):
        original, pulled = project / out, second_clone / out
        assert pulled.exists(), f"{out} missing in the clone after dvc pull"
        if original.is_file():
            assert pulled.read_bytes() == original.read_bytes(), out


@pytest.mark.slow
def test_queued_sweeps_run_two_at_a_time_reusing_the_cache(project):
    """The README's worked example: two ratio lists queued, run by two workers, compared in `dvc exp show`."""
    ratios = {"sweep-25": [25, 100], "sweep-75": [75, 100]}
    for name, values in ratios.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"sweep.ratios={json.dumps(values)}"], project)
    start_queue(project, jobs=2)
    status = wait_for_queue(project, list(ratios), timeout=900)
    assert status.count("Success") == 2, status
    for name, values in ratios.items():
        ran = ran_stages(run(["dvc", "queue", "logs", name], project).stdout)
        assert ran, f"{name} ran no stage"
        for stage in ran:  # only the new ratio's classifiers and the report; everything else came from the cache
            assert stage.startswith((f"train_classifier@{values[0]}-", "report")), f"{name} reran {stage}: {ran}"
        # the new R in both regimes, with each of their two generators
        assert sum(stage.startswith("train_classifier@") for stage in ran) == 4, ran
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    experiments = {
        rev["name"]: rev["data"] for commit in shown for exp in commit.get("experiments") or [] for rev in exp["revs"]
    }
    for name, values in ratios.items():
        data = experiments[name]
        assert data["params"]["params.yaml"]["data"]["sweep"]["ratios"] == values
        headline = data["metrics"]["metrics/summary.json"]["data"]
        rev = data["rev"]
        summary = json.loads(run(["git", "show", f"{rev}:metrics/summary.detail.json"], project).stdout)
        for regime in ("keep100", "keep25"):  # each experiment's own ratios, and only those, in every regime
            assert sorted(summary[regime]["accuracy"], key=int) == ["0", *map(str, values)], summary
            assert headline[regime.replace("keep", "k")]["r_max"] is not None


@pytest.mark.slow
def test_stage_run_under_accelerate_then_committed_needs_no_rerun(project):
    """The README's recipe for stages under `accelerate launch`: run it outside DVC, `dvc commit` it."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["generate"]["inference_steps"] += 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stage = "generate@100-0"
    assert stage in run(["dvc", "status", stage], project).stdout
    images = project / params["paths"]["synthetic"] / "keep_100_gen_0"
    before = {path.name: path.read_bytes() for path in images.rglob("*.png")}
    run(
        [
            "accelerate",
            "launch",
            "--config_file",
            str(ACCELERATE / "single_gpu.yaml"),
            "--cpu",
            "stages/generate.py",
            "--keep",
            "100",
            "--generator",
            "0",
        ],
        project,
    )
    after = {path.name: path.read_bytes() for path in images.rglob("*.png")}
    # accelerate's run wrote every image anew (one more sampling step): `dvc commit` records new scans, not old ones
    assert sorted(after) == sorted(before) and all(after[name] != before[name] for name in before)
    run(["dvc", "commit", "-f", stage], project)
    assert "up to date" in run(["dvc", "status", stage], project).stdout
    assert_nothing_ran(
        project,
        run(["dvc", "repro", stage], project).stdout,
        stages=["survey@kermany", "prepare", "finetune@100-0", stage],
    )


@pytest.mark.slow
def test_launcher_param_runs_finetune_under_accelerate_through_dvc(project):
    """runtime.launcher becomes dvc.yaml's command: `dvc repro` itself trains on two processes and records it.
    Progress bars are no stage's param, so turning them off reruns nothing."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["runtime"]["progress"] = not params["runtime"]["progress"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "up to date" in run(["dvc", "status", "finetune@100-0", "generate@100-0"], project).stdout
    params["runtime"]["launcher"] = " ".join(["accelerate", "launch", *two_cpu_options()])
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    done = run(["dvc", "repro", "finetune@100-0"], project)

    assert ran_stages(done.stdout) == ["finetune@100-0"], done.stdout
    assert "2 process(es)" in done.stdout + done.stderr
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    command = f"{params['runtime']['launcher']} stages/finetune.py --keep 100 --generator 0"
    assert lock["stages"]["finetune@100-0"]["cmd"] == command
    assert "up to date" in run(["dvc", "status", "finetune@100-0"], project).stdout
    # one process logged and wrote: two dvclive loggers on one folder left unparsable JSON
    live = json.loads((project / params["paths"]["live"] / "finetune_keep_100_gen_0" / "metrics.json").read_text())
    assert live["step"] == params["finetune"]["steps"] - 1
    detail = project / params["paths"]["metrics"] / "finetune" / "keep_100_gen_0.detail.json"
    finetune = json.loads(detail.read_text())
    assert finetune["steps"] == params["finetune"]["steps"]
