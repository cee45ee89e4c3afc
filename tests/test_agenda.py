"""The agenda study's scripts: agenda_study.sh queues the study preset (five classifier seeds, three generator
seeds) and refuses bad requests before queueing anything; agenda_findings.py turns finished rank-/sweep-
experiments into tables that compare each variant's generator means with the default's."""

import importlib.util
import json
import re
import subprocess
import sys

import pandas as pd
import pytest
from pipeline_helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
spec = importlib.util.spec_from_file_location("agenda_findings", REPO / "scripts" / "agenda_findings.py")
findings = sys.modules["agenda_findings"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(findings)


def synthetic(auroc: float, low: float, high: float, fid: float, copying_p: float, memorized: float = 0.2) -> dict:
    """One generator's metrics/synthetic detail (floor of the FID 2.0, sd 0.5)."""
    return {
        "detector_auroc": auroc,
        "detector_auroc_ci_low": low,
        "detector_auroc_ci_high": high,
        "domain_fid": fid,
        "domain_fid_floor": 2.0,
        "domain_fid_floor_sd": 0.5,
        "domain_precision": 0.99,
        "domain_precision_floor": 0.98,
        "domain_recall": 0.8,
        "domain_recall_floor": 0.95,
        "memorized_share_features": memorized,
        "memorized_share_features_floor": 0.1,
        "copying_p_features": copying_p,
        "n_synthetic": 200,
    }


def generators(*figures: dict) -> dict[str, dict]:
    """The detail files of generator seeds 0, 1, ... in an experiment commit."""
    return {findings.synthetic_path(seed): s for seed, s in enumerate(figures)}


RATIO_ROWS = [
    {"family": "keep100", "x": 0, "generators": 0, "seeds": 5, "accuracy": 0.95, "f1": 0.9},
    {"family": "keep100", "x": 100, "generators": 2, "seeds": 5, "accuracy": 0.94, "f1": 0.8, "delta": -0.01,
     "delta_lower": -0.025, "delta_upper": 0.004, "se": 0.007, "df": 12.3, "verdict": "inconclusive", "p": 0.2,
     "p_noninferior": 0.08, "power": 0.45},
    {"family": "keep25", "x": 100, "generators": 2, "seeds": 5, "accuracy": 0.5, "f1": 0.1, "delta": -0.4,
     "delta_lower": -0.45, "delta_upper": -0.35, "se": 0.02, "df": 9.0, "verdict": "inferior", "p": 0.001,
     "p_noninferior": 1.0, "power": 0.3},
]  # fmt: skip
RATIOS = pd.DataFrame(RATIO_ROWS).to_csv(index=False)
DEFAULT = generators(synthetic(0.60, 0.50, 0.70, 17.0, 1e-6), synthetic(0.62, 0.52, 0.72, 16.6, 0.3))  # copies
FILES = {
    "aaa": DEFAULT | {findings.samples_path(0): "grid a"},  # rank-default
    "bbb": generators(  # rank-linear: FID gap 3.2 against 14.8 in both generators, no copying
        synthetic(0.62, 0.52, 0.72, 5.0, 0.4), synthetic(0.63, 0.53, 0.73, 5.4, 0.6)
    )
    | {findings.samples_path(0): "grid b"},
    "ccc": generators(  # rank-worse: detector worse in both generators, FID gap as the default's
        synthetic(0.90, 0.80, 0.97, 16.5, 1e-5), synthetic(0.92, 0.82, 0.99, 16.9, 1e-5)
    ),
    "iii": generators(  # rank-spread: the mean FID gap moves 4.3 (> 2 floor sds), but one generator did it all
        synthetic(0.64, 0.54, 0.74, 3.0, 1e-4), synthetic(0.66, 0.56, 0.76, 22.0, 0.5)
    ),
    "ggg": generators(synthetic(0.62, 0.52, 0.72, 5.0, 0.4), synthetic(0.63, 0.53, 0.73, 5.4, 0.6)),  # rank-px64
    "hhh": generators(  # rank-curated: the figures of the 188 and 190 scans curation kept
        synthetic(0.58, 0.48, 0.68, 16.8, 1e-4) | {"curation_rejected": 12, "curation_kept": 188},
        synthetic(0.60, 0.50, 0.70, 16.8, 1e-4) | {"curation_rejected": 10, "curation_kept": 190},
    ),
    "ooo": {"metrics/synthetic/keep_100.detail.json": synthetic(0.5, 0.4, 0.6, 2.0, 0.5)},  # rank-old: one generator
    "eee": generators(synthetic(0.5, 0.4, 0.6, 2.0, 0.5)),  # rank-queued: stale figures of an unfinished run
    "fff": generators(synthetic(0.5, 0.4, 0.6, 2.0, 0.5)),  # other-run: not the study's
    "ddd": DEFAULT  # sweep-default
    | {findings.RATIOS: RATIOS, findings.SUMMARY: {"keep100": {"r_max": 50, "alpha": 0.025}}},
}


def exp(name: str, rev: str, state: str, schedule: str, image_size: int = 32, quantile: float = 0.0) -> dict:
    finetune = {"beta_schedule": schedule, "steps": 400, "image_size": image_size}
    data = {"finetune": finetune, "curate": {"real_quantile": quantile}, "sweep": {"generator_seeds": [0, 1]}}
    if rev == "ooo":  # run before generator seeds were a DVC dimension
        data = {"finetune": finetune | {"seed": 0}, "curate": {"real_quantile": quantile}}
    params = {"params.yaml": {"data": data}}
    return {"name": name, "executor": {"state": state}, "revs": [{"rev": rev, "data": {"params": params}}]}


@pytest.fixture
def shown(monkeypatch) -> list[dict]:
    def git_file(rev: str, path: str) -> bytes | None:
        value = FILES.get(rev, {}).get(path)
        return None if value is None else (value if isinstance(value, str) else json.dumps(value)).encode()

    monkeypatch.setattr(findings, "git_file", git_file)
    return [
        {"rev": "workspace", "experiments": None},
        {
            "rev": "f" * 40,
            "experiments": [
                exp("rank-default", "aaa", "success", "cosine"),
                exp("rank-linear", "bbb", "success", "linear"),
                exp("rank-worse", "ccc", "success", "sigmoid"),
                exp("rank-spread", "iii", "success", "scaled_linear"),
                exp("rank-px64", "ggg", "success", "linear", image_size=64),
                exp("rank-curated", "hhh", "success", "cosine", quantile=0.05),
                exp("rank-old", "ooo", "success", "laplace"),
                exp("rank-queued", "eee", "queued", "laplace"),
                exp("other-run", "fff", "success", "laplace"),
                exp("sweep-default", "ddd", "success", "cosine"),
            ],
        },
    ]


def rank_rows(text: str) -> dict[str, str]:
    """{variant: its row} of the first table, the rank runs', in the order of the table."""
    section = text.split("## Ratio")[0]
    return {
        line.split(" | ")[0].strip("| "): line
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| variant")
    }


def test_findings_compare_each_variant_with_the_default_only_where_the_evidence_separates_them(shown, tmp_path):
    saved = tmp_path / "shown.json"
    saved.write_text(json.dumps(shown))
    findings.main(["--input", str(saved), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "findings.md").read_text()
    rows = rank_rows(text)
    assert 'finetune.beta_schedule="linear"' in rows["linear"]
    assert rows["linear"].endswith("| FID gap: better; memorizes less |")  # 14.8 -> 3.2 in both generators
    assert rows["worse"].endswith("| detector: worse |")  # 0.81-0.98 above 0.51-0.71; FID moved 0.1 < 2 sd
    assert rows["spread"].endswith("| not separated |")  # gaps 1 and 20: their spread explains the mean's move
    assert rows["px64"].endswith("| not comparable (measured in another feature space or against other scans) |")
    # default: two generators, means with their range; the first one copies (p 1e-6 < 0.05 / 2)
    assert "| 2 | 0.610 (0.510-0.710) [0.600 to 0.620] | 14.80 [14.60 to 15.00] (0.50) |" in rows["default"]
    assert rows["default"].endswith("| 0.200 / 0.100 | 1e-06, 0.3: copies | - |")
    assert "| curate.real_quantile=0.05 (rejected 12 of 200, 10 of 200) |" in rows["curated"]
    assert rows["curated"].endswith("| not separated |")  # the same scans' figures, compared like any variant
    assert (
        "| default | 2 x 5 | 0.950 | -0.010 (-0.025, +0.004) | 0.025 | inconclusive | 0.45 | 50% | 0.900 / 0.800 |"
        in text
    )
    assert "queued" not in rows and "run" not in rows and "old" not in rows  # unfinished, unrelated, pre-replicate
    assert "- `rank-old` (ooo): no sweep.generator_seeds in its params" in text.split("## Left out")[1]
    assert list(rows) == ["linear", "px64", "curated", "default", "spread", "worse"]  # non-copying first, by AUROC
    table = pd.read_csv(tmp_path / "out" / "findings.csv")
    assert len(table) == 7 * 2  # six rank variants and one sweep, each with two generators
    assert list(table.columns[:7]) == ["variant", "phase", "rev", "changed", "comparable", "generator", "auroc"]
    assert table.loc[table["variant"] == "default", "copying_p"].tolist() == [1e-6, 0.3, 1e-6, 0.3]
    assert (tmp_path / "out" / "validation.png").stat().st_size > 1000
    written = {p.name: p.read_text() for p in (tmp_path / "out").glob("samples_*.png")}
    assert written == {"samples_default.png": "grid a", "samples_best.png": "grid b"}  # the default and the best
    assert "best-ranked variant, `linear`, generator seed 0." in text


def test_a_variants_figures_are_its_generators_mean_and_copying_is_the_stages_own_test(shown, monkeypatch):
    """Three generators: each figure is their mean; copying is read from copying_p_features (never from the
    memorized share, here far above its floor) and called at 0.05 split over the three generators."""
    three = generators(
        synthetic(0.60, 0.5, 0.7, 12.0, 0.03, memorized=0.5),  # p 0.03: copying alone, not once per three
        synthetic(0.70, 0.6, 0.8, 6.0, 0.5, memorized=0.5),
        synthetic(0.80, 0.7, 0.9, 3.0, 0.9, memorized=0.5),
    )
    monkeypatch.setitem(FILES, "ttt", three)
    [f] = findings.findings_of("rank-three", "ttt", {"sweep.generator_seeds": [0, 1, 2]}, {})
    assert [g.seed for g in f.generators] == [0, 1, 2]
    assert f.mean("auroc") == pytest.approx(0.70) and f.mean("fid_gap") == pytest.approx(5.0)
    assert f.values("copying_p") == [0.03, 0.5, 0.9] and not f.copies
    monkeypatch.setitem(FILES, "ttt", three | generators(synthetic(0.6, 0.5, 0.7, 12.0, 0.01)))  # 0.01 < 0.05 / 3
    [copying] = findings.findings_of("rank-three", "ttt", {"sweep.generator_seeds": [0, 1, 2]}, {})
    assert copying.copies


def test_an_experiment_without_every_generators_figures_is_left_out_by_name(shown):
    with pytest.raises(findings.LeftOut, match="holds no metrics/synthetic/keep_100_gen_2.detail.json"):
        findings.findings_of("rank-default", "aaa", {"sweep.generator_seeds": [0, 1, 2]}, {})
    with pytest.raises(findings.LeftOut, match="ran before generators were replicated"):
        findings.findings_of("rank-old", "ooo", {"finetune.seed": 0}, {})


def test_several_synthetic_classes_give_one_finding_per_class_with_the_sweeps_figures(shown, monkeypatch):
    """evaluate_synthetic keys its figures by class when the sweep has several: each becomes a row
    `<variant>:<CLASS>` averaged over the generators, sharing the experiment's test figures."""
    files = generators(
        {"keep": 100, "DME": synthetic(0.9, 0.8, 1.0, 9.0, 0.5), "DRUSEN": synthetic(0.7, 0.6, 0.8, 4.0, 0.5)},
        {"keep": 100, "DME": synthetic(0.8, 0.7, 0.9, 7.0, 0.5), "DRUSEN": synthetic(0.6, 0.5, 0.7, 6.0, 0.5)},
    ) | {findings.RATIOS: RATIOS, findings.SUMMARY: {"keep100": {"r_max": 0, "alpha": 0.0125}}}
    monkeypatch.setitem(FILES, "sss", files)
    params = {"prepare.classes": ["CNV", "DME"], "sweep.generator_seeds": [0, 1]}
    rows = findings.findings_of("sweep-scarce", "sss", params, {})
    assert [(f.variant, round(f.mean("auroc"), 6), f.mean("fid_gap")) for f in rows] == [
        ("scarce:DME", 0.85, 6.0),
        ("scarce:DRUSEN", 0.65, 3.0),
    ]
    assert {(f.sweep.delta_100, f.sweep.alpha, f.sweep.r_max, f.comparable) for f in rows} == {
        (-0.01, 0.0125, 0, False)
    }
    assert {(f.sweep.generators_100, f.sweep.seeds_100, f.sweep.power_100) for f in rows} == {(2, 5, 0.45)}


def test_a_sweep_with_more_classes_gets_its_reports_per_class_recall_table(shown, monkeypatch, tmp_path):
    """The per-class recall comes from the sweep's own ratio summary (the report's paired intervals); a two-class
    sweep, whose summary has no recall_<CLASS> columns, gets no table."""
    recalls = [  # keep25: another cohort, not shown
        {"recall_DME": 0.25},
        {"recall_DME": 0.5, "recall_DME_delta_low": 0.1, "recall_DME_delta_high": 0.4},
        {"recall_DME": 0.0, "recall_DME_delta_low": -0.3, "recall_DME_delta_high": -0.2},
    ]
    ratios = pd.DataFrame([row | recall for row, recall in zip(RATIO_ROWS, recalls)]).to_csv(index=False)
    monkeypatch.setitem(FILES, "sss", {**FILES["ddd"], findings.RATIOS: ratios})
    swept = exp("sweep-scarce", "sss", "success", "cosine")
    swept["revs"][0]["data"]["params"]["params.yaml"]["data"]["report"] = {"confidence": 0.9}
    shown[1]["experiments"].append(swept)
    saved = tmp_path / "shown.json"
    saved.write_text(json.dumps(shown))
    findings.main(["--input", str(saved), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "findings.md").read_text()
    assert "Per-class test recall of `scarce`" in text and "with its 90% interval" in text
    assert "| 0 | 0.250 |" in text and "| 100 | 0.500 (+0.250; +0.100 to +0.400) |" in text
    assert "-0.300" not in text and "recall of `default`" not in text


def test_no_finished_study_is_an_error(shown, tmp_path):
    saved = tmp_path / "shown.json"
    queued = [e for e in shown[1]["experiments"] if e["name"] in ("rank-queued", "rank-old")]
    saved.write_text(json.dumps([{"rev": "f" * 40, "experiments": queued}]))
    with pytest.raises(SystemExit, match="run scripts/agenda_study.sh first"):
        findings.main(["--input", str(saved), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_separation_needs_the_generators_spread_counted_and_says_when_one_generator_cannot_show_it():
    def variant(name: str, *gaps: float) -> findings.Finding:
        runs = tuple(
            findings.Generator(
                seed=seed, auroc=0.6, auroc_low=0.5, auroc_high=0.7, fid_gap=gap, fid_floor_sd=0.5, precision=1.0,
                precision_floor=1.0, recall=0.9, recall_floor=1.0, memorized=0.1, memorized_floor=0.1, copying_p=0.5,
            )
            for seed, gap in enumerate(gaps)
        )  # fmt: skip
        return findings.Finding(name, "rank", name, "-", True, runs)

    default = variant("default", 15.0, 1.3, 4.4)  # issue 25's reference: its generators 14 apart
    assert findings.compare(variant("lucky", 0.7, 2.9, 12.5), default) == "not separated"  # mean 5.4 vs 6.9
    assert findings.compare(variant("far", 40.0, 42.0, 44.0), default) == "FID gap: worse"
    assert findings.compare(variant("one", 0.7), variant("default", 15.0)) == (
        "FID gap: better; one generator on a side: the seed's spread is not counted"
    )


def test_a_key_the_reference_run_lacks_is_changed_only_where_it_differs_from_params_yaml(shown):
    reference = {"sweep.generator_seeds": [0, 1]}  # run before curate existed
    added = {"curate.real_quantile": 0.0}  # params.yaml's value: off
    params = {"sweep.generator_seeds": [0, 1]}
    [off] = findings.findings_of("rank-x", "bbb", params | {"curate.real_quantile": 0.0}, reference, added)
    [on] = findings.findings_of("rank-x", "bbb", params | {"curate.real_quantile": 0.05}, reference, added)
    assert off.changed == "-"
    assert on.changed == "curate.real_quantile=0.05"


def test_changed_is_measured_from_the_phases_default_else_the_other_phases_else_params_yaml():
    defaults = {"sweep": {"finetune.steps": 1}, "rank": {"finetune.steps": 2}}
    assert findings.reference_params("sweep-x", defaults, {"finetune.steps": 3}) == {"finetune.steps": 1}
    assert findings.reference_params("sweep-x", {"rank": defaults["rank"]}, {}) == {"finetune.steps": 2}
    assert findings.reference_params("sweep-x", {}, {"finetune.steps": 3}) == {"finetune.steps": 3}


def study(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run agenda_study.sh with a stand-in `dvc` that records each command line (one per queued run)."""
    (tmp_path / "sample" / "CNV").mkdir(parents=True, exist_ok=True)
    (tmp_path / "bin").mkdir(exist_ok=True)
    log = tmp_path / "dvc.log"
    fake = tmp_path / "bin" / "dvc"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    fake.chmod(0o755)
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "agenda_study.sh"), *args],
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "SAMPLE": str(tmp_path / "sample")},
    )
    return done, log.read_text().splitlines() if log.exists() else []


def test_rank_runs_queue_every_generator_of_keep_100_under_the_study_preset(tmp_path):
    done, queued = study(tmp_path, "rank")
    assert done.returncode == 0, done.stderr
    assert len(queued) > 10 and all(line.endswith(" evaluate_synthetic") for line in queued)  # the group
    assert all("-S sweep.seeds=[0,1,2,3,4] -S sweep.generator_seeds=[0,1,2]" in line for line in queued)
    assert all(f"-S paths.raw.kermany={tmp_path / 'sample'} " in line for line in queued)
    assert not any("finetune.seed" in line or re.search(r"-n rank-\w*_seed\d", line) for line in queued)
    done, [linear] = study(tmp_path / "sweep", "sweep", "linear")
    assert done.returncode == 0 and linear.startswith("exp run --queue -n sweep-linear ")
    assert linear.endswith("-S finetune.beta_schedule=linear")  # no target: the whole pipeline


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep"], "name the variants to sweep"),
        (["sweep", "default", "bogus"], "unknown variant 'bogus'"),
        (["rank", "linear", "bogus"], "unknown variant 'bogus'"),
        (["rank", "default_seed1"], "unknown variant 'default_seed1'"),  # generator seeds are in every run now
        (["nonsense"], "usage:"),
    ],
)
def test_study_script_refuses_bad_requests_before_queueing(tmp_path, args, message):
    done, queued = study(tmp_path, *args)
    assert done.returncode == 2 and message in done.stderr and queued == []


def test_study_script_names_a_missing_sample(tmp_path):
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "agenda_study.sh"), "rank"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SAMPLE": str(tmp_path)},
    )
    assert done.returncode == 2 and f"SAMPLE={tmp_path} has no CNV folder" in done.stderr
