"""End to end: the real dvc.yaml stages on a tiny params override, in a temporary copy of the repository."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pipeline_helpers import copy_project, ran_stages, run


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """This module's copy of the tiny project after `dvc repro` (pipeline_helpers.built_project)."""
    return copy_project(tmp_path_factory, "pipeline")


@pytest.mark.slow
def test_every_stage_ran_and_wrote_finite_outputs(project: Path):
    sweep = yaml.safe_load((project / "params.yaml").read_text())["sweep"]
    ratios = [0, *sweep["ratios"]]
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert summary["r_max"] in ratios
    assert sorted(summary["regimes"]) == sorted(str(keep) for keep in sweep["keep"])
    for regime in summary["regimes"].values():
        assert sorted(map(int, regime["ratios"])) == ratios
        for entry in regime["ratios"].values():
            for name in ("accuracy", "f1", "precision", "recall", "auroc", "log_loss"):
                assert math.isfinite(entry[name]), name
            assert entry["seeds"] == len(sweep["seeds"])
    synthetic = json.loads((project / "metrics/synthetic.json").read_text())
    assert math.isfinite(synthetic["domain_fid"]) and math.isfinite(synthetic["domain_fid_floor"])
    assert synthetic["few_images"] is True  # 8 synthetic scans: flagged, not silently trusted
    table = pd.read_csv(project / "plots/ratio_sweep.csv")
    assert sorted(table["ratio"].unique()) == ratios
    assert len(table) == len(ratios) * len(sweep["seeds"]) * len(sweep["keep"])
    for figure in ("accuracy_vs_ratio.png", "samples.png"):
        assert (project / "plots" / figure).stat().st_size > 5_000
    pngs = sorted(p.name for p in (project / "data/synthetic/CNV").iterdir())
    assert pngs == [f"{seed:06d}.png" for seed in range(8)]
    data = json.loads((project / "metrics/data.json").read_text())
    assert data["patients_in_several_splits"] == 0


@pytest.mark.slow
def test_repro_again_has_nothing_to_do(project: Path):
    status = run(["dvc", "status"], project).stdout
    assert "up to date" in status, status


@pytest.mark.slow
def test_exp_run_with_other_ratios_reuses_the_baseline(project: Path):
    output = run(["dvc", "exp", "run", "-S", "sweep.ratios=[25,100]"], project).stdout
    ran = ran_stages(output)
    assert any(name.startswith("train_classifier@25-") for name in ran), output
    for name in ran:
        assert name.startswith(("train_classifier@25-", "report")), f"{name} ran again: {output}"
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    text = json.dumps(shown)
    assert '"25"' in text and "r_max" in text
