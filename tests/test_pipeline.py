"""End to end: the real dvc.yaml stages on a tiny params override, in a temporary copy of the repository."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

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


def run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the repository's files with the tiny params, committed, phantom written, repro run.

    data.dvc keeps the default phantom's hash: repro records the tiny phantom's, as it does for real data."""
    root = tmp_path_factory.mktemp("project")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file() and not name.startswith(("metrics/", "plots/")) and name != "dvc.lock":
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], root)
    run([sys.executable, "scripts/make_phantom.py"], root)
    run(["dvc", "repro"], root)
    return root


@pytest.mark.slow
def test_every_stage_ran_and_wrote_finite_outputs(project: Path):
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert set(summary["ratios"]) == {"0", "50", "100"}
    assert summary["r_max"] in (0, 50, 100)
    for entry in summary["ratios"].values():
        for name in ("accuracy", "f1", "precision", "recall", "auroc", "log_loss"):
            assert math.isfinite(entry[name]), name
        assert entry["seeds"] == 2
    synthetic = json.loads((project / "metrics/synthetic.json").read_text())
    assert math.isfinite(synthetic["domain_fid"]) and math.isfinite(synthetic["domain_fid_floor"])
    assert synthetic["few_images"] is True  # 8 synthetic scans: flagged, not silently trusted
    table = pd.read_csv(project / "plots/ratio_sweep.csv")
    assert sorted(table["ratio"].unique()) == [0, 50, 100] and len(table) == 6
    for figure in ("accuracy_vs_ratio.png", "samples.png"):
        assert (project / "plots" / figure).stat().st_size > 5_000
    pngs = sorted(p.name for p in (project / "data/synthetic/CNV").iterdir())
    assert pngs == [f"{seed:06d}.png" for seed in range(8)]
    data = json.loads((project / "metrics/data.json").read_text())
    assert data["patients_in_several_splits"] == 0


@pytest.mark.slow
def test_repro_again_has_nothing_to_do(project: Path):
    status = run(["dvc", "status"], project)
    assert "up to date" in status, status


@pytest.mark.slow
def test_forced_rerun_gives_identical_results(project: Path):
    """Same params and seeds on the CPU: a forced rerun of a classifier writes byte-identical metrics."""
    metrics = project / "metrics/classifier/ratio_50_seed_1.json"
    predictions = project / "data/predictions/ratio_50_seed_1.csv"
    before = metrics.read_bytes(), predictions.read_bytes()
    run(["dvc", "repro", "-f", "-s", "train_classifier@50-1"], project)
    assert (metrics.read_bytes(), predictions.read_bytes()) == before


@pytest.mark.slow
def test_exp_run_with_other_ratios_reuses_the_baseline(project: Path):
    output = run(["dvc", "exp", "run", "-S", "sweep.ratios=[25,100]"], project)
    assert "train_classifier@25-0" in output
    for skipped in ("baseline@0", "finetune", "generate", "train_classifier@100-0"):
        assert f"Running stage '{skipped}'" not in output
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project))
    text = json.dumps(shown)
    assert '"25"' in text and "r_max" in text
