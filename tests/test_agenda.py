"""The agenda study's scripts: agenda_study.sh refuses bad requests before queueing anything, and
agenda_findings.py turns finished rank-/sweep- experiments into tables that compare each with the default."""

import importlib.util
import json
import subprocess
import sys

import pytest
from pipeline_helpers import REPO

sys.path.insert(0, str(REPO / "scripts"))
spec = importlib.util.spec_from_file_location("agenda_findings", REPO / "scripts" / "agenda_findings.py")
findings = sys.modules["agenda_findings"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(findings)


def synthetic(auroc: float, low: float, high: float, fid: float, memorized: float) -> dict:
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
        "n_synthetic": 200,
    }


RATIOS = (
    "family,x,accuracy,f1,delta,delta_lower,delta_upper,half_width,verdict\n"
    "keep100,0,0.950000,0.9,,,,,\n"
    "keep100,100,0.940000,0.8,-0.010000,-0.025000,0.004000,0.015000,inconclusive\n"
    "keep25,100,0.500000,0.1,-0.400000,-0.45,-0.35,0.05,inferior\n"
)
FILES = {
    "aaa": {findings.SYNTHETIC: synthetic(0.60, 0.50, 0.70, 17.0, 0.25), findings.SAMPLES: "grid a"},  # rank-default
    "bbb": {  # rank-linear: better FID, no memorizing
        findings.SYNTHETIC: synthetic(0.62, 0.52, 0.72, 5.0, 0.11),
        findings.SAMPLES: "grid b",
    },
    "ccc": {findings.SYNTHETIC: synthetic(0.90, 0.80, 0.97, 16.5, 0.24)},  # rank-worse: detector worse only
    "ggg": {findings.SYNTHETIC: synthetic(0.62, 0.52, 0.72, 5.0, 0.11)},  # rank-px64: other feature space
    "hhh": {  # rank-curated: the figures of the 188 scans curation kept
        findings.SYNTHETIC: synthetic(0.58, 0.48, 0.68, 16.8, 0.24) | {"curation_rejected": 12, "curation_kept": 188}
    },
    "eee": {findings.SYNTHETIC: synthetic(0.5, 0.4, 0.6, 2.0, 0.1)},  # rank-queued: stale figures of an unfinished run
    "fff": {findings.SYNTHETIC: synthetic(0.5, 0.4, 0.6, 2.0, 0.1)},  # other-run: not the study's
    "ddd": {  # sweep-default
        findings.SYNTHETIC: synthetic(0.60, 0.50, 0.70, 17.0, 0.25),
        findings.RATIOS: RATIOS,
        findings.SUMMARY: {"keep100": {"r_max": 50}},
    },
}


def exp(name: str, rev: str, state: str, schedule: str, image_size: int = 32, quantile: float = 0.0) -> dict:
    finetune = {"beta_schedule": schedule, "steps": 400, "image_size": image_size}
    params = {"params.yaml": {"data": {"finetune": finetune, "curate": {"real_quantile": quantile}}}}
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
                exp("rank-px64", "ggg", "success", "linear", image_size=64),
                exp("rank-curated", "hhh", "success", "cosine", quantile=0.05),
                exp("rank-queued", "eee", "queued", "laplace"),
                exp("other-run", "fff", "success", "laplace"),
                exp("sweep-default", "ddd", "success", "cosine"),
            ],
        },
    ]


def test_findings_compare_each_variant_with_the_default_only_where_the_evidence_separates_them(shown, tmp_path):
    saved = tmp_path / "shown.json"
    saved.write_text(json.dumps(shown))
    findings.main(["--input", str(saved), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "findings.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert 'finetune.beta_schedule="linear"' in rows["linear"]
    assert rows["linear"].endswith("| FID gap: better; memorizes less |")  # 15 -> 3 above the floor, sd 0.5
    assert rows["worse"].endswith("| detector: worse |")  # 0.80-0.97 lies above 0.50-0.70; FID moved 0.5 < 2 sd
    assert rows["px64"].endswith("| not comparable (measured in another feature space or against other scans) |")
    assert "0.250 / 0.100 (" in rows["default"]
    assert "| curate.real_quantile=0.05 (12 of 200 rejected) |" in rows["curated"]
    assert rows["curated"].endswith("| not separated |")  # the same scans' figures, compared like any variant
    assert "| 0.950 | -0.010 (-0.025, +0.004) | inconclusive | 50% | 0.900 / 0.800 |" in text
    assert "queued" not in rows and "run" not in rows  # unfinished and unrelated experiments are left out
    ranked_order = [line.split(" | ")[0].strip("| ") for line in text.split("## Ratio")[0].splitlines()[4:] if line]
    assert ranked_order == [
        "linear",
        "px64",
        "curated",
        "default",
        "worse",
    ]  # non-copying first; then copying ones by AUROC
    table = (tmp_path / "out" / "findings.csv").read_text().splitlines()
    assert len(table) == 1 + 6 and table[0].startswith("variant,phase,rev,changed,comparable,auroc")
    assert (tmp_path / "out" / "validation.png").stat().st_size > 1000
    written = {p.name: p.read_text() for p in (tmp_path / "out").glob("samples_*.png")}
    assert written == {"samples_default.png": "grid a", "samples_best.png": "grid b"}  # the default and the best
    assert "samples_best.png: real (top rows) and synthetic scans of the best-ranked run, `linear`." in text


def test_memorization_is_tested_against_the_real_floor(shown):
    [default] = findings.findings_of("rank-default", "aaa", {}, {})
    [linear] = findings.findings_of("rank-linear", "bbb", {}, {})
    assert default.memorized_p < 1e-6  # 50 of 200 against a floor of 10 %
    assert linear.memorized_p > 0.3  # 22 of 200: what the real scans themselves do
    assert findings.findings_of("rank-gone", "zzz", {}, {}) == []  # no synthetic figures in that commit


def test_several_synthetic_classes_give_one_finding_per_class_with_the_sweeps_figures(shown, monkeypatch):
    """evaluate_synthetic keys its figures by class when the sweep has several: each becomes a row
    `<variant>:<CLASS>`, sharing the experiment's test figures."""
    files = {
        findings.SYNTHETIC: {"keep": 100, "DME": synthetic(0.9, 0.8, 1.0, 9.0, 0.1),
                             "DRUSEN": synthetic(0.7, 0.6, 0.8, 4.0, 0.3)},
        findings.RATIOS: RATIOS,
        findings.SUMMARY: {"keep100": {"r_max": 0}},
    }  # fmt: skip
    monkeypatch.setitem(FILES, "sss", files)
    rows = findings.findings_of("sweep-scarce", "sss", {"prepare.classes": ["CNV", "DME"]}, {})
    assert [(f.variant, f.auroc, f.fid_gap) for f in rows] == [("scarce:DME", 0.9, 7.0), ("scarce:DRUSEN", 0.7, 2.0)]
    assert {(f.delta_100, f.r_max, f.comparable) for f in rows} == {(-0.01, 0, False)}


def test_a_sweep_with_more_classes_gets_its_reports_per_class_recall_table(shown, monkeypatch, tmp_path):
    """The per-class recall comes from the sweep's own ratio summary (the report's paired intervals); a two-class
    sweep, whose summary has no recall_<CLASS> columns, gets no table."""
    ratios = RATIOS.replace("verdict\n", "verdict,recall_DME,recall_DME_delta_low,recall_DME_delta_high\n")
    ratios = ratios.replace("0.9,,,,,\n", "0.9,,,,,,0.25,,\n").replace("inconclusive\n", "inconclusive,0.5,0.1,0.4\n")
    ratios = ratios.replace("inferior\n", "inferior,0.0,-0.3,-0.2\n")  # keep25: another cohort, not shown
    files = {**FILES["ddd"], findings.RATIOS: ratios}
    monkeypatch.setitem(FILES, "sss", files)
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
    queued = [e for e in shown[1]["experiments"] if e["name"] == "rank-queued"]
    saved.write_text(json.dumps([{"rev": "f" * 40, "experiments": queued}]))
    with pytest.raises(SystemExit, match="run scripts/agenda_study.sh first"):
        findings.main(["--input", str(saved), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep"], "name the variants to sweep"),
        (["sweep", "default", "bogus"], "unknown variant 'bogus'"),
        (["rank", "linear", "bogus"], "unknown variant 'bogus'"),
        (["nonsense"], "usage:"),
    ],
)
def test_study_script_refuses_bad_requests_before_queueing(tmp_path, args, message):
    (tmp_path / "CNV").mkdir()
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "agenda_study.sh"), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SAMPLE": str(tmp_path)},  # no dvc on PATH: queueing would fail loudly
    )
    assert done.returncode == 2 and message in done.stderr


def test_study_script_names_a_missing_sample(tmp_path):
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "agenda_study.sh"), "rank"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "SAMPLE": str(tmp_path)},
    )
    assert done.returncode == 2 and f"SAMPLE={tmp_path} has no CNV folder" in done.stderr


def test_seed_replicates_claim_only_what_every_pairing_of_seeds_supports():
    def run(variant: str, auroc: float, fid: float, memorized: float) -> findings.Finding:
        return findings.Finding(
            variant=variant, phase="rank", rev=variant, changed="-", comparable=True, auroc=auroc,
            auroc_low=auroc - 0.1, auroc_high=auroc + 0.1, fid_gap=fid, fid_floor_sd=0.5, precision=1.0,
            precision_floor=1.0, recall=0.9, recall_floor=1.0, memorized=memorized, memorized_floor=0.1,
            memorized_p=0.001 if memorized > 0.2 else 0.5,
        )  # fmt: skip

    ranked = [
        run("default", 0.60, 15.0, 0.25),
        run("default_seed1", 0.62, 2.0, 0.12),  # another seed of the default: no copies, a small gap
        run("cond", 0.60, 1.0, 0.10),
        run("cond_seed1", 0.61, 1.5, 0.11),
        run("single", 0.60, 1.0, 0.10),  # one seed: no replicate row
    ]
    groups = findings.seed_groups(ranked)
    assert {name: [f.variant for f in runs] for name, runs in groups.items()} == {
        "default": ["default", "default_seed1"],
        "cond": ["cond", "cond_seed1"],
    }
    table = findings.seed_table(groups)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}
    # against default seed 0 alone, cond looks better on FID and copying; default seed 1 removes both claims
    assert findings.compare(ranked[2], ranked[0]) == "FID gap: better; memorizes less"
    assert rows["cond"].endswith("| not separated |")
    assert "| 0, 1 | 0.600, 0.610 | 1.00, 1.50 | 0.100 (0.5), 0.110 (0.5) |" in rows["cond"]
    assert rows["default"].endswith("| - |")


def test_a_key_the_reference_run_lacks_is_changed_only_where_it_differs_from_params_yaml(shown):
    reference = {"finetune.seed": 0}  # run before curate existed
    added = {"curate.real_quantile": 0.0}  # params.yaml's value: off
    [off] = findings.findings_of("rank-x", "bbb", {"finetune.seed": 0, "curate.real_quantile": 0.0}, reference, added)
    [on] = findings.findings_of("rank-x", "bbb", {"finetune.seed": 0, "curate.real_quantile": 0.05}, reference, added)
    assert off.changed == "-"
    assert on.changed == "curate.real_quantile=0.05"


def test_changed_is_measured_from_the_phases_default_else_the_other_phases_else_params_yaml():
    defaults = {"sweep": {"finetune.seed": 1}, "rank": {"finetune.seed": 2}}
    assert findings.reference_params("sweep-x", defaults, {"finetune.seed": 3}) == {"finetune.seed": 1}
    assert findings.reference_params("sweep-x", {"rank": defaults["rank"]}, {}) == {"finetune.seed": 2}
    assert findings.reference_params("sweep-x", {}, {"finetune.seed": 3}) == {"finetune.seed": 3}
