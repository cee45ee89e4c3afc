"""End to end: the real dvc.yaml stages on a tiny params override, in a temporary copy of the repository.

The checks here only read the tiny build (one copy for the module); tests that run experiments in it are in
test_pipeline_experiments.py and test_pipeline_modes.py, each on a copy of its own."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pipeline_helpers import assert_nothing_ran, copy_project, run, train_patients

from synthratio.report import HEADLINE_KEYS


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """This module's copy of the tiny project after `dvc repro` (pipeline_helpers.built_project)."""
    return copy_project(tmp_path_factory, "pipeline")


def flatten(tree: dict, prefix: str = "") -> list[str]:
    """Dotted keys of a nested dict, as `dvc exp show` names its columns."""
    return [
        key
        for name, value in tree.items()
        for key in (flatten(value, f"{prefix}{name}.") if isinstance(value, dict) else [f"{prefix}{name}"])
    ]


@pytest.mark.slow
def test_every_stage_ran_and_wrote_finite_outputs(project: Path):
    sweep = yaml.safe_load((project / "params.yaml").read_text())["sweep"]
    ratios = [0, *sweep["ratios"]]
    summary = json.loads((project / "metrics/summary.detail.json").read_text())
    headline = json.loads((project / "metrics/summary.json").read_text())
    assert sorted(k for k in summary if k.startswith("keep")) == sorted(f"keep{keep}" for keep in sweep["keep"])
    assert sorted(headline) == sorted(f"k{keep}" for keep in sweep["keep"])  # the one DVC metric: per regime
    for keep in sweep["keep"]:
        block, columns = summary[f"keep{keep}"], headline[f"k{keep}"]
        assert columns["r_max"] in (*ratios, "undetermined") and columns["lower"] == round(
            block["lower"][str(max(ratios))], 4
        )
        assert columns["fid_gap"] == pytest.approx(block["fid_gap"]) and 0 <= columns["det_auroc"] <= 1
        assert block["r_max_shown"] in ratios and block["stop"] in ("none", "inferior", "inconclusive")
        assert sorted(map(int, block["accuracy"])) == ratios and sorted(map(int, block["lower"])) == ratios[1:]
        assert all(math.isfinite(v) for v in [*block["accuracy"].values(), *block["lower"].values()])
        assert (block["generators"], block["seeds"]) == (len(sweep["generator_seeds"]), len(sweep["seeds"]))
        for g in sweep["generator_seeds"]:
            synthetic = json.loads((project / f"metrics/synthetic/keep_{keep}_gen_{g}.json").read_text())
            assert math.isfinite(synthetic["domain_fid"]) and math.isfinite(synthetic["domain_fid_floor"])
            detail = json.loads((project / f"metrics/synthetic/keep_{keep}_gen_{g}.detail.json").read_text())
            assert detail["few_images"] is True  # 8 synthetic scans: flagged, not silently trusted
            assert 0 <= detail["copying_p_features"] <= 1 and detail["generator"] == g
            assert set(synthetic) < set(detail) and all(detail[key] == value for key, value in synthetic.items())
            pngs = sorted(p.name for p in (project / f"data/synthetic/keep_{keep}_gen_{g}/CNV").iterdir())
            assert pngs == [f"{seed:06d}.png" for seed in range(8)]
            for figure in (f"samples_keep_{keep}_gen_{g}.png", f"memorization_keep_{keep}_gen_{g}.png"):
                assert (project / "plots" / figure).stat().st_size > 5_000
    table = pd.read_csv(project / "plots/ratio_summary.csv")
    assert len(table) == len(ratios) * len(sweep["keep"]) and sorted(table["x"].unique()) == ratios
    assert (project / "plots/accuracy_vs_ratio.png").stat().st_size > 5_000
    data = json.loads((project / "metrics/data.json").read_text())
    assert data["patients_in_several_splits"] == 0


@pytest.mark.slow
def test_each_generator_learned_only_its_own_cohort(project: Path):
    """Every generator of the scarce regime (one per generator seed) saw a quarter of the real CNV training
    patients, the same ones its classifiers saw, and never a held-back one; generators of one regime differ
    only by their seed, and the R=100 classifiers they feed differ too."""
    everyone = train_patients(project)
    models = project / "models/diffusion"
    learned = {
        (keep, g): set(json.loads((models / f"keep_{keep}_gen_{g}/training_patients.json").read_text()))
        for keep in (100, 25)
        for g in (0, 1)
    }
    scarce = learned[(25, 0)]
    assert learned[(100, 0)] == learned[(100, 1)] == everyone and learned[(25, 1)] == scarce
    assert scarce < everyone and len(scarce) == max(1, (25 * len(everyone) + 50) // 100)  # 25%, halves rounded up
    for g in (0, 1):
        for run_metrics in json.loads((project / f"metrics/classifier/ratio_100_keep_25_gen_{g}.json").read_text()):
            assert run_metrics["real_patients_of_class"] == len(scarce) and run_metrics["generator"] == g
    weights = [(project / f"models/diffusion/keep_100_gen_{g}/unet/diffusion_pytorch_model.safetensors").read_bytes()
               for g in (0, 1)]  # fmt: skip
    assert weights[0] != weights[1]  # the seed sets init, batch order and noise
    predictions = [(project / f"data/predictions/ratio_100_keep_{keep}_gen_0/seed_0.csv").read_bytes()
                   for keep in (100, 25)]  # fmt: skip
    assert predictions[0] != predictions[1]


# What a pipeline run may leave outside the stages' declared outputs, each with its reason.
NOT_OUTPUTS = (
    ".dvc/",  # DVC's cache and temporary files
    ".pytest_cache/",
    "__pycache__/",  # interpreter caches (.dvcignore keeps them out of every hash)
)


@pytest.mark.slow
def test_every_file_a_stage_writes_is_a_declared_output(project: Path):
    """After `dvc repro` (whose results built_project committed), every file git does not track lies inside an
    output dvc.yaml declares: a stage that wrote elsewhere would leave files DVC neither caches nor restores."""
    from dvc.repo import Repo

    outs = [out.def_path.rstrip("/") for stage in Repo(str(project)).index.stages for out in stage.outs]
    listed = run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], project).stdout.splitlines()
    written = [line[3:] for line in listed if line[:2] in ("??", "!!")]
    assert written, "git status lists no untracked output at all: the check would see nothing"
    stray = [
        path
        for path in written
        if not any(path == out or path.startswith(out + "/") for out in outs)
        and not any(part in path or path.startswith(part) for part in NOT_OUTPUTS)
    ]
    assert not stray, f"written outside every declared output: {stray[:10]}"


@pytest.mark.slow
def test_repro_again_runs_nothing(project: Path):
    assert_nothing_ran(project, run(["dvc", "repro"], project).stdout)


@pytest.mark.slow
def test_exp_show_leads_with_the_answer_on_a_200_column_screen(project: Path):
    """metrics/summary.json is the only DVC metric: six columns per regime, R_max never null. In a terminal DVC
    pages its table at 1024 characters (COLUMNS=1024 without the pager draws the same); the first 200 of its
    header line hold every one of them, before any param."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    metrics = shown[0]["data"]["metrics"]  # the workspace
    keeps = yaml.safe_load((project / "params.yaml").read_text())["sweep"]["keep"]
    expected = [f"k{keep}.{key}" for keep in sorted(keeps, reverse=True) for key in HEADLINE_KEYS]
    assert list(metrics) == ["metrics/summary.json"] and flatten(metrics["metrics/summary.json"]["data"]) == expected
    table = run(["dvc", "exp", "show", "--no-pager"], project, env={"COLUMNS": "1024"}).stdout.splitlines()
    header = next(line for line in table if "Experiment" in line)[:200]
    assert header.split()[2 : 2 + len(expected)] == expected, header  # Experiment, Created, the answer, params
    # a queued experiment adds State and Executor: the README's command drops them with Created
    run(["bash", "scripts/queue.sh", "-n", "queued", "-S", "classifier.learning_rate=0.0003"], project)
    try:
        dropped = ["dvc", "exp", "show", "--no-pager", "--drop", "Created|State|Executor"]
        table = run(dropped, project, env={"COLUMNS": "1024"}).stdout.splitlines()
    finally:
        run(["dvc", "queue", "remove", "--all"], project)
    header = next(line for line in table if "Experiment" in line)[:200]
    assert header.split()[1 : 1 + len(expected)] == expected, header
    assert any("[queued]" in line[:200] for line in table), table
