"""End to end: the real dvc.yaml stages on a tiny params override, in a temporary copy of the repository."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pipeline_helpers import GIT_USER, copy_project, ran_stages, run


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """This module's copy of the tiny project after `dvc repro` (pipeline_helpers.built_project)."""
    return copy_project(tmp_path_factory, "pipeline")


def train_patients(project: Path, label: str = "CNV") -> set[int]:
    """Raw patient ids of the prepared training scans of `label`, read from index.csv."""
    index = pd.read_csv(project / "data/prepared/index.csv")
    return set(index.loc[(index["split"] == "train") & (index["class"] == label), "patient_id"])


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
    summary = json.loads((project / "metrics/summary.json").read_text())
    assert sorted(k for k in summary if k.startswith("keep")) == sorted(f"keep{keep}" for keep in sweep["keep"])
    for keep in sweep["keep"]:
        block = summary[f"keep{keep}"]
        assert block["r_max_shown"] in ratios and block["stop"] in ("none", "inferior", "inconclusive")
        assert sorted(map(int, block["accuracy"])) == ratios and sorted(map(int, block["lower"])) == ratios[1:]
        assert all(
            math.isfinite(v)
            for v in [*block["accuracy"].values(), *block["log_loss"].values(), block["resolvable_margin"]]
        )
        synthetic = json.loads((project / f"metrics/synthetic/keep_{keep}.json").read_text())
        assert math.isfinite(synthetic["domain_fid"]) and math.isfinite(synthetic["domain_fid_floor"])
        detail = json.loads((project / f"metrics/synthetic/keep_{keep}.detail.json").read_text())
        assert detail["few_images"] is True  # 8 synthetic scans: flagged, not silently trusted
        assert set(synthetic) < set(detail) and all(detail[key] == value for key, value in synthetic.items())
        pngs = sorted(p.name for p in (project / f"data/synthetic/keep_{keep}/CNV").iterdir())
        assert pngs == [f"{seed:06d}.png" for seed in range(8)]
        for figure in (f"samples_keep_{keep}.png", f"memorization_keep_{keep}.png"):
            assert (project / "plots" / figure).stat().st_size > 5_000
    table = pd.read_csv(project / "plots/ratio_summary.csv")
    assert len(table) == len(ratios) * len(sweep["keep"]) and sorted(table["x"].unique()) == ratios
    assert (project / "plots/accuracy_vs_ratio.png").stat().st_size > 5_000
    data = json.loads((project / "metrics/data.json").read_text())
    assert data["patients_in_several_splits"] == 0


@pytest.mark.slow
def test_each_generator_learned_only_its_own_cohort(project: Path):
    """The scarce regime's generator saw a quarter of the real CNV training patients, the same ones its
    classifiers saw, and never a held-back one; the R=100 classifiers of the two regimes, fed by different
    generators, differ."""
    everyone = train_patients(project)
    full = set(json.loads((project / "models/diffusion/keep_100/training_patients.json").read_text()))
    scarce = set(json.loads((project / "models/diffusion/keep_25/training_patients.json").read_text()))
    assert full == everyone
    assert scarce < everyone and len(scarce) == max(1, (25 * len(everyone) + 50) // 100)  # 25%, halves rounded up
    for run_metrics in json.loads((project / "metrics/classifier/ratio_100_keep_25.json").read_text()):
        assert run_metrics["real_patients_of_class"] == len(scarce)
    predictions = [(project / f"data/predictions/ratio_100_keep_{keep}/seed_0.csv").read_bytes() for keep in (100, 25)]
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
    output = run(["dvc", "repro"], project).stdout
    assert ran_stages(output) == [], output


@pytest.mark.slow
def test_exp_run_with_other_ratios_reuses_the_baselines_and_generators(project: Path):
    output = run(["dvc", "exp", "run", "-S", "sweep.ratios=[25,100]"], project).stdout
    ran = ran_stages(output)
    assert any(name.startswith("train_classifier@25-") for name in ran), output
    for name in ran:
        assert name.startswith(("train_classifier@25-", "report")), f"{name} ran again: {output}"
    summary = json.loads((project / "metrics/summary.json").read_text())
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
    run(["git", *GIT_USER, "add", "-A"], project)
    run(["git", *GIT_USER, "commit", "-qm", "run"], project)
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


@pytest.mark.slow
def test_exp_show_lists_what_people_compare(project: Path):
    """At most 60 metric columns (per-run classifier figures, per-R detail and timings stay in files)."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    metrics = shown[0]["data"]["metrics"]  # the workspace
    columns = [f"{path}:{key}" for path, data in metrics.items() for key in flatten(data["data"])]
    assert 20 <= len(columns) <= 60, columns
    assert not [c for c in columns if any(word in c for word in ("second", "per_second", "device"))], columns


@pytest.mark.slow
def test_data_mode_fills_each_cohort_with_its_own_synthetic_scans(project: Path):
    """mix.mode data from one `dvc exp run`: the 50% cohort's left-out CNV scans replaced one for one by its
    generator's scans, judged against all real patients."""
    overrides = ["mix.mode=data", "sweep.keep=[100,50]", "sweep.ratios=[100]", "generate.num_images=16"]
    run(["dvc", "exp", "run", *(arg for o in overrides for arg in ("-S", o))], project)
    n_real = len(pd.read_csv(project / "data/prepared/index.csv").query("split == 'train' and `class` == 'CNV'"))
    cohort = set(json.loads((project / "models/diffusion/keep_50/training_patients.json").read_text()))
    filled_runs = json.loads((project / "metrics/classifier/ratio_100_keep_50.json").read_text())
    nothing_left_out = json.loads((project / "metrics/classifier/ratio_100_keep_100.json").read_text())
    assert [run["seed"] for run in filled_runs] == [0, 1]
    for filled, unfilled in zip(filled_runs, nothing_left_out):
        assert filled["real_patients_of_class"] == len(cohort) == (50 * len(train_patients(project)) + 50) // 100
        assert filled["real_scans_of_class"] + filled["synthetic_scans"] == n_real  # the CNV count is unchanged
        assert filled["synthetic_share"] == pytest.approx(filled["synthetic_scans"] / n_real)
        assert unfilled["synthetic_scans"] == 0
        seed = unfilled["seed"]
        same = [(project / f"data/predictions/ratio_{r}_keep_100/seed_{seed}.csv").read_bytes() for r in (0, 100)]
        assert same[0] == same[1]  # nothing to fill: the baseline's batches, the baseline's classifier
    summary = json.loads((project / "metrics/summary.json").read_text())
    detail = json.loads((project / "metrics/summary.detail.json").read_text())
    assert detail["mode"] == "data" and sorted(summary["data"]["accuracy"], key=int) == ["0", "50"]


@pytest.mark.slow
def test_curation_reruns_what_reads_synthetic_scans_and_records_what_it_rejected(project: Path):
    """curate.real_quantile: the generators and baselines are not retrained; evaluate_synthetic scores, and the sweep
    mixes in, the scans the seed-1 baseline calls CNV as surely as the median real val CNV scan."""
    # the tiny build's own settings (an earlier test left data mode in the workspace), curation on
    settings = ["mix.mode=replace", "sweep.keep=[100,25]", "sweep.ratios=[50,100]", "generate.num_images=8"]
    overrides = [arg for setting in (*settings, "curate.real_quantile=0.5") for arg in ("-S", setting)]
    output = run(["dvc", "exp", "run", *overrides], project).stdout
    ran = ran_stages(output)
    assert any(name.startswith("train_classifier@") for name in ran), output
    for name in ran:
        # generate@100 reruns for its num_images (16 in the data-mode test), never for curation
        assert name.startswith(("generate@100", "evaluate_synthetic@", "train_classifier@", "report")), output
    for keep in (100, 25):
        scored = json.loads((project / f"metrics/synthetic/keep_{keep}.detail.json").read_text())
        assert scored["curation_kept"] + scored["curation_rejected"] == 8
        # a bar was set (it is 0 with curation off); tests/classify/test_curation.py checks the rule itself
        assert 0 < scored["curation_threshold"] < 1
        for ratio in (50, 100):
            for trained in json.loads((project / f"metrics/classifier/ratio_{ratio}_keep_{keep}.json").read_text()):
                assert trained["synthetic_scans"] == scored["curation_kept"]
                assert trained["synthetic_rejected"] == scored["curation_rejected"]


@pytest.mark.slow
def test_several_synthetic_classes_each_get_their_cohort_scans_and_figures(project: Path):
    """sweep.synthetic_class [CNV, NORMAL]: the cohort's class-conditional generator samples both classes, the
    cohort keeps its share of each class's patients, every run mixes both in at R, and each class's scans are
    scored against its own real scans."""
    classes = ["finetune.target_class=[CNV,NORMAL]", "sweep.synthetic_class=[CNV,NORMAL]"]
    # one cohort, the scarce one (each class's own draw shows there), and one R: every stage reruns, CI pays once
    settings = ["mix.mode=replace", "sweep.keep=[25]", "sweep.ratios=[50]", "generate.num_images=8"]
    more = [*classes, *settings, "curate.real_quantile=0", "finetune.class_conditional=true"]
    run(["dvc", "exp", "run", *(arg for setting in more for arg in ("-S", setting))], project)
    patients = {name: len(train_patients(project, name)) for name in ("CNV", "NORMAL")}
    for index, name in enumerate(("CNV", "NORMAL")):  # each class its own seeds: no noise draw under two labels
        pngs = sorted(p.name for p in (project / f"data/synthetic/keep_25/{name}").iterdir())
        assert pngs == [f"{seed:06d}.png" for seed in range(8 * index, 8 * index + 8)]
    scored = json.loads((project / "metrics/synthetic/keep_25.json").read_text())
    assert sorted(scored) == ["CNV", "NORMAL"] and all(math.isfinite(s["domain_fid"]) for s in scored.values())
    for trained in json.loads((project / "metrics/classifier/ratio_50_keep_25.json").read_text()):
        assert trained["synthetic_scans"] == 16  # 8 of each class
        assert trained["synthetic_share"] == pytest.approx(0.5)  # half of both classes' slots
        # the cohort keeps 25 % of each class's training patients (halves rounded up)
        assert trained["real_patients_of_class"] == sum((25 * n + 50) // 100 for n in patients.values())
    report = (project / "plots/report.md").read_text()
    assert "## Synthetic scans of cohort keep 25, NORMAL" in report
