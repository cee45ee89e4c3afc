"""The committed results belong to the committed code: in a clone of HEAD, DVC finds no stage whose command,
code or params changed since dvc.lock recorded it, and every result git tracks (metrics, tables, figures) has
the bytes dvc.lock recorded.

A fresh clone has no DVC cache, so data dependencies (data/raw, the prepared arrays, models) read as missing:
those are not what this checks. What it compares is what DVC compares: commands, code files and params, not
the bytes a rerun on another CPU would give."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pipeline_helpers import GIT_USER, REPO, commit_all, copy_repository, run


def stale_stages(project: Path) -> dict[str, list[str]]:
    """Per stage, what `dvc status` finds changed in its command, params, code or git-tracked outputs."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        produced = {out.def_path.rstrip("/") for out in repo.index.outs}  # stages' and .dvc files' outputs
    status = json.loads(run(["dvc", "status", "--json"], project).stdout or "{}")
    tracked = set(run(["git", "ls-files"], project).stdout.splitlines())
    stale: dict[str, list[str]] = {}
    for stage, changes in status.items():
        found = []
        for change in changes:
            if change == "changed command":
                found.append("its command")
                continue
            if not isinstance(change, dict):
                continue
            for path, state in change.get("changed deps", {}).items():
                if isinstance(state, dict):  # a params file: {section: state}
                    found += [f"params {path}:{key} {what}" for key, what in state.items()]
                elif not any(
                    path == out or f"{path}/".startswith(f"{out}/") or out.startswith(f"{path}/") for out in produced
                ):
                    found.append(f"code {path} {state}")  # git's, not an output DVC restores nor a folder of them
            for path, state in change.get("changed outs", {}).items():
                if path in tracked:  # a committed result (cache: false) whose bytes dvc.lock did not record
                    found.append(f"committed output {path} {state}")
        if found:
            stale[stage] = found
    return stale


def listed(stale: dict[str, list[str]]) -> str:
    return "\n".join(f"  {stage}: {'; '.join(changes)}" for stage, changes in sorted(stale.items()))


def clone_of_head(target: Path) -> Path:
    run(["git", "clone", "-q", str(REPO), str(target)], target.parent)
    return target


def test_dvc_lock_matches_the_committed_code_and_params(tmp_path: Path):
    project = clone_of_head(tmp_path / "head")
    stale = stale_stages(project)
    assert not stale, (
        f"dvc.lock is stale: rerun these stages (`dvc repro`), commit dvc.lock, metrics/, plots/:\n{listed(stale)}"
    )


def test_the_working_trees_dvc_lock_matches_its_code_and_params(tmp_path: Path):
    """The same for what is on disk, committed or not (after the quick start: its smoke run's lock and params): a
    stage's code edited since the last run is found before it is committed."""
    project = tmp_path / "workspace"
    copy_repository(project, with_results=True)
    run(["git", "init", "-q"], project)
    commit_all(project, "workspace")
    stale = stale_stages(project)
    assert not stale, f"the workspace's dvc.lock is stale: rerun these stages (`dvc repro`):\n{listed(stale)}"


def test_the_stale_lock_check_names_what_changed(tmp_path: Path):
    """Positive control: a changed code file, param, command and committed metric are each found, by stage."""
    project = clone_of_head(tmp_path / "head")
    with (project / "src/synthratio/report.py").open("a") as source:
        source.write("# changed\n")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["generate"]["inference_steps"] += 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc_yaml = project / "dvc.yaml"
    dvc_yaml.write_text(
        dvc_yaml.read_text().replace("cmd: python stages/prepare.py", "cmd: python ./stages/prepare.py")
    )
    (project / "metrics/data.json").write_text("{}\n")
    run(["git", *GIT_USER, "commit", "-qam", "stale"], project)

    stale = stale_stages(project)

    assert "code src/synthratio/report.py modified" in stale["report"]
    assert "params params.yaml:generate modified" in stale["generate@100-0"]
    assert "its command" in stale["prepare"] and "committed output metrics/data.json modified" in stale["prepare"]
    assert not [stage for stage in stale if stage.startswith(("baseline@", "train_classifier@"))], stale
