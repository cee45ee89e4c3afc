"""The sweep's other modes on the tiny build, each from one `dvc exp run` in a copy of the build of its own
(the `project` fixture): data-level R, curation, several synthetic classes."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from pipeline_helpers import copy_project, ran_stages, run, train_patients


@pytest.fixture
def project(tmp_path_factory) -> Path:
    """A copy of the tiny build (pipeline_helpers.built_project) for this test alone."""
    return copy_project(tmp_path_factory, "mode")


@pytest.mark.slow
def test_data_mode_fills_each_cohort_with_its_own_synthetic_scans(project: Path):
    """mix.mode data from one `dvc exp run`: the 50% cohort's left-out CNV scans replaced one for one by its
    generator's scans, judged against all real patients."""
    overrides = ["mix.mode=data", "sweep.keep=[100,50]", "sweep.ratios=[100]", "generate.num_images=16"]
    run(["dvc", "exp", "run", *(arg for o in overrides for arg in ("-S", o))], project)
    n_real = len(pd.read_csv(project / "data/prepared/index.csv").query("split == 'train' and `class` == 'CNV'"))
    cohort = set(json.loads((project / "models/diffusion/keep_50_gen_1/training_patients.json").read_text()))
    filled_runs = json.loads((project / "metrics/classifier/ratio_100_keep_50_gen_1.json").read_text())
    nothing_left_out = json.loads((project / "metrics/classifier/ratio_100_keep_100_gen_1.json").read_text())
    assert [run["seed"] for run in filled_runs] == [0, 1]
    for filled, unfilled in zip(filled_runs, nothing_left_out):
        assert filled["real_patients_of_class"] == len(cohort) == (50 * len(train_patients(project)) + 50) // 100
        assert filled["real_scans_of_class"] + filled["synthetic_scans"] == n_real  # the CNV count is unchanged
        assert filled["synthetic_share"] == pytest.approx(filled["synthetic_scans"] / n_real)
        assert unfilled["synthetic_scans"] == 0
        seed = unfilled["seed"]
        same = [
            (project / f"data/predictions/{run}/seed_{seed}.csv").read_bytes()
            for run in ("ratio_0_keep_100", "ratio_100_keep_100_gen_1")
        ]
        assert same[0] == same[1]  # nothing to fill: the baseline's batches, the baseline's classifier
    detail = json.loads((project / "metrics/summary.detail.json").read_text())
    # x: the realised synthetic share of the CNV training scans (every tiny patient has two scans: 50 %)
    assert detail["mode"] == "data" and sorted(detail["data"]["accuracy"], key=int) == ["0", "50"]
    assert (detail["data"]["generators"], detail["data"]["seeds"]) == (2, 2)
    headline = json.loads((project / "metrics/summary.json").read_text())["data"]
    assert headline["det_auroc"] == detail["data"]["det_auroc"]  # the keep-25 cohort's generators


@pytest.mark.slow
def test_curation_reruns_what_reads_synthetic_scans_and_records_what_it_rejected(project: Path):
    """curate.real_quantile: the generators and baselines are not retrained; evaluate_synthetic scores, and the sweep
    mixes in, the scans the seed-1 baseline calls CNV as surely as the median real val CNV scan."""
    output = run(["dvc", "exp", "run", "-S", "curate.real_quantile=0.5"], project).stdout
    ran = ran_stages(output)
    assert any(name.startswith("train_classifier@") for name in ran), output
    for name in ran:
        assert name.startswith(("evaluate_synthetic@", "train_classifier@", "report")), output
    for keep, g in ((100, 0), (100, 1), (25, 0), (25, 1)):
        scored = json.loads((project / f"metrics/synthetic/keep_{keep}_gen_{g}.detail.json").read_text())
        assert scored["curation_kept"] + scored["curation_rejected"] == 8
        # a bar was set (it is 0 with curation off); tests/classify/test_curation.py checks the rule itself
        assert 0 < scored["curation_threshold"] < 1
        for ratio in (50, 100):
            metrics = project / f"metrics/classifier/ratio_{ratio}_keep_{keep}_gen_{g}.json"
            for trained in json.loads(metrics.read_text()):
                assert trained["synthetic_scans"] == scored["curation_kept"]
                assert trained["synthetic_rejected"] == scored["curation_rejected"]


@pytest.mark.slow
def test_several_synthetic_classes_each_get_their_cohort_scans_and_figures(project: Path):
    """sweep.synthetic_class [CNV, NORMAL]: the cohort's class-conditional generator samples both classes, the
    cohort keeps its share of each class's patients, every run mixes both in at R, and each class's scans are
    scored against its own real scans."""
    classes = ["finetune.target_class=[CNV,NORMAL]", "sweep.synthetic_class=[CNV,NORMAL]"]
    # one cohort, the scarce one (each class's own draw shows there), and one R: every stage reruns, CI pays once
    settings = ["sweep.keep=[25]", "sweep.ratios=[50]", "sweep.generator_seeds=[0]"]
    more = [*classes, *settings, "finetune.class_conditional=true"]
    run(["dvc", "exp", "run", *(arg for setting in more for arg in ("-S", setting))], project)
    patients = {name: len(train_patients(project, name)) for name in ("CNV", "NORMAL")}
    for index, name in enumerate(("CNV", "NORMAL")):  # each class its own seeds: no noise draw under two labels
        pngs = sorted(p.name for p in (project / f"data/synthetic/keep_25_gen_0/{name}").iterdir())
        assert pngs == [f"{seed:06d}.png" for seed in range(8 * index, 8 * index + 8)]
    scored = json.loads((project / "metrics/synthetic/keep_25_gen_0.json").read_text())
    assert sorted(scored) == ["CNV", "NORMAL"] and all(math.isfinite(s["domain_fid"]) for s in scored.values())
    gaps = [s["domain_fid"] - s["domain_fid_floor"] for s in scored.values()]  # the headline: both classes' mean
    assert json.loads((project / "metrics/summary.json").read_text())["k25"]["fid_gap"] == round(sum(gaps) / 2, 3)
    for trained in json.loads((project / "metrics/classifier/ratio_50_keep_25_gen_0.json").read_text()):
        assert trained["synthetic_scans"] == 16  # 8 of each class
        assert trained["synthetic_share"] == pytest.approx(0.5)  # half of both classes' slots
        # the cohort keeps 25 % of each class's training patients (halves rounded up)
        assert trained["real_patients_of_class"] == sum((25 * n + 50) // 100 for n in patients.values())
    report = (project / "plots/report.md").read_text()
    assert "## Synthetic scans, keep 25, generator 0, NORMAL" in report
