"""Experiments on the tiny build: other ratios reuse what is cached, and `dvc plots diff` overlays two
revisions. Each test runs in a copy of the build of its own (the `project` fixture), so none depends on
what another left in the workspace."""

import json
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import copy_project, ran_stages, run


@pytest.fixture
def project(tmp_path_factory) -> Path:
    """A copy of the tiny build (pipeline_helpers.built_project) for this test alone."""
    return copy_project(tmp_path_factory, "experiment")


@pytest.mark.slow
def test_exp_run_with_other_ratios_reuses_the_baselines_and_generators(project: Path):
    output = run(["dvc", "exp", "run", "-S", "sweep.ratios=[25,100]"], project).stdout
    ran = ran_stages(output)
    assert any(name.startswith("train_classifier@25-") for name in ran), output
    for name in ran:
        assert name.startswith(("train_classifier@25-", "report")), f"{name} ran again: {output}"
    summary = json.loads((project / "metrics/summary.detail.json").read_text())
    assert sorted(summary["keep100"]["accuracy"], key=int) == [
        "0",
        "25",
        "100",
    ]  # the experiment's ratios, not the old ones


@pytest.mark.slow
def test_plots_declare_every_figure_and_overlay_two_revisions(project: Path):
    """Every PNG the stages write is a declared plot; `dvc plots diff` of the run and an experiment draws both
    revisions' accuracy-vs-R curves (with their bands) in one view; the page needs no network."""
    shown = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)["data"]
    written = {str(p.relative_to(project)) for p in (project / "plots").glob("*.png")}
    assert written and written <= set(shown), f"undeclared figures: {written - set(shown)}"
    head_ratios = yaml.safe_load((project / "params.yaml").read_text())["sweep"]["ratios"]
    assert run(["git", "status", "--porcelain"], project).stdout == ""  # HEAD is the tiny build's run, committed
    run(["dvc", "exp", "run", "-n", "other-ratios", "-S", "sweep.ratios=[75,100]"], project)
    diff = json.loads(run(["dvc", "plots", "diff", "HEAD", "other-ratios", "--json"], project).stdout)["data"]
    values = diff["accuracy vs R"][0]["content"]["data"]["values"]
    assert {row["rev"] for row in values} == {"HEAD", "other-ratios"}
    drawn = {(row["rev"], int(row["x"])) for row in values if row["family"] == "keep100"}
    assert drawn == {("HEAD", r) for r in (0, *head_ratios)} | {("other-ratios", r) for r in (0, 75, 100)}
    assert all(row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"] for row in values)
    run(["dvc", "plots", "show"], project)
    page = (project / "dvc_plots" / "index.html").read_text()
    assert "vegaEmbed" in page and "<script src=" not in page  # the libraries are inlined: nothing to fetch
