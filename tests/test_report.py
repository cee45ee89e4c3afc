import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from synthratio.config import Params, ReportConfig, params_from_dict
from synthratio.figures import save_ratio_plot
from synthratio.inference import Runs, holm
from synthratio.layout import classifier_live_path, classifier_metrics_path, generator_files, predictions_path
from synthratio.report import (
    HEADLINE_KEYS,
    STUDY_ACCURACY,
    Arm,
    families,
    headline,
    load_arm,
    markdown_report,
    read_synthetic,
    summarize,
    terminal_summary,
    training_curves,
    verdict_sentence,
)  # fmt: skip

CONFIG = ReportConfig(metric="accuracy", margin=0.01, confidence=0.95, bootstrap=400, permutations=2000, seed=0)
N_SCANS = 1000  # 500 patients of two scans


def arm(hits: np.ndarray, keep: int = 100, ratio: int = 0, share: float = 0.0) -> Arm:
    """Two-class runs right (p=0.9 on the true class) where hits is 1, per (seed, scan), and their metric rows."""
    labels = np.tile([0, 1], hits.shape[1] // 2)
    p_true = np.where(hits, 0.9, 0.1)
    p0 = np.where(labels == 0, p_true, 1 - p_true)
    runs = Runs(probs=np.stack([p0, 1 - p0], axis=2), labels=labels, patients=np.arange(hits.shape[1]) // 2)
    rows = pd.DataFrame([dict(ratio=ratio, seed=s, keep=keep, accuracy=h.mean(), f1=h.mean(), precision=0.9, recall=0.9,
                              auroc=0.95, log_loss=0.3, ece=0.05, synthetic_share=share, real_scans_of_class=100)
                         for s, h in enumerate(hits)])  # fmt: skip
    return Arm(runs=runs, metrics=rows)


def paired(reference: np.ndarray, lost: int, gained: int = 0) -> np.ndarray:
    """The reference's hits with `lost` hits turned into misses and `gained` misses into hits, per seed: a
    candidate correlated with the reference scan by scan, as a classifier trained on mostly the same data is."""
    out = reference.copy()
    for seed in range(len(out)):
        hits, misses = np.flatnonzero(reference[seed]), np.flatnonzero(~reference[seed])
        out[seed, hits[seed * 7 : seed * 7 + lost]] = False
        out[seed, misses[seed * 3 : seed * 3 + gained]] = True
    return out


REFERENCE = np.random.default_rng(0).random((2, N_SCANS)) < 0.9


def test_r_max_stops_at_the_first_r_that_costs_accuracy_even_when_later_ones_recover():
    """The issue's case: {0: .90, 25: .88, 50: .90, 75: .90, 100: .90} at margin 0.01. A point threshold on
    the means returned 100; R=25 is shown to cost 2 points, so R_max is 0."""
    arms = {(0, 100): arm(REFERENCE)}
    arms[(25, 100)] = arm(paired(REFERENCE, lost=20), ratio=25)
    for ratio in (50, 75, 100):
        arms[(ratio, 100)] = arm(paired(REFERENCE, lost=3, gained=3), ratio=ratio)
    summary, table = summarize(families("replace", arms, keeps=[100], ratios=[25, 50, 75, 100]), CONFIG, "replace")
    block = summary["keep100"]
    assert (block["r_max"], block["stopped_at"], block["stop"]) == (0, 25, "inferior")
    assert block["accuracy"]["100"] == pytest.approx(block["accuracy"]["0"])
    assert table.set_index("x").loc[50, "verdict"] == "non-inferior"  # shown, but after the sequence stopped


def test_summary_numbers_lower_bounds_and_holm():
    full = {(0, 100): arm(REFERENCE), (50, 100): arm(paired(REFERENCE, lost=2, gained=2), ratio=50),
            (100, 100): arm(paired(REFERENCE, lost=120), ratio=100)}  # fmt: skip
    scarce_reference = paired(REFERENCE, lost=60)
    scarce = {(0, 25): arm(scarce_reference, keep=25), (50, 25): arm(paired(REFERENCE, lost=10), keep=25, ratio=50),
              (100, 25): arm(paired(REFERENCE, lost=130), keep=25, ratio=100)}  # fmt: skip
    summary, table = summarize(
        families("replace", {**full, **scarce}, keeps=[100, 25], ratios=[50, 100]), CONFIG, "replace"
    )
    assert [k for k in summary if k.startswith("keep")] == ["keep100", "keep25"]
    assert (summary["keep100"]["r_max"], summary["keep100"]["stop"]) == (50, "inferior")
    assert summary["keep100"]["n_test_patients"] == 500 and summary["keep100"]["n_test"] == N_SCANS
    gain = table[(table["family"] == "keep25") & (table["x"] == 50)].iloc[0]
    assert gain["delta"] == pytest.approx(0.05) and gain["delta_lower"] > 0.03 and gain["verdict"] == "non-inferior"
    assert summary["keep25"]["lower"]["50"] == round(gain["delta_lower"], 6)  # the headline keeps 6 decimals
    drop = table[(table["family"] == "keep100") & (table["x"] == 100)].iloc[0]
    assert drop["delta_upper"] < -0.09 and drop["p"] < 1e-3 and drop["p_holm"] >= drop["p"]
    tested = table[table["x"] > 0]
    assert (tested["p_holm"] >= tested["p"]).all() and tested["p_holm"].notna().all()
    # adjusted over the four comparisons only: counting the two R=0 rows as tests would inflate every p_holm
    assert tested["p_holm"].tolist() == pytest.approx(holm(tested["p"].tolist())) and len(tested) == 4
    reference = table[table["x"] == 0]
    assert reference["verdict"].isna().all()  # R=0 is the reference, not a comparison
    assert (table["accuracy_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["accuracy_high"]).all()
    assert (
        (table["seeds"] == 2).all() and (table["margin"] == CONFIG.margin).all() and list(table.index) == list(range(6))
    )
    assert table.loc[table["x"] == 0, "p_holm"].isna().all()  # only comparisons are adjusted
    for name in ("keep100", "keep25"):
        part = table[(table["family"] == name) & (table["x"] > 0)]
        assert summary[name]["resolvable_margin"] == round(part["half_width"].max(), 6)
        assert summary[name]["test_set_margin"] == round(part["test_half_width"].max(), 6)
    assert (table["real_scans_of_class"] == 100).all() and table[
        "synthetic_scans"
    ].isna().all()  # not in these runs' metrics
    pd.testing.assert_frame_equal(
        summarize(families("replace", {**full, **scarce}, keeps=[100, 25], ratios=[50, 100]), CONFIG, "replace")[1],
        table,
    )
    first = table.iloc[0]  # keep100 at R=0: 400 draws of 500 patients stratified by class, crossed with 2 seeds, seed 0
    assert [round(first[key], 4) for key in ("accuracy_low", "accuracy_high", "log_loss_low", "log_loss_high")] == [
        0.883,
        0.917,
        0.2877,
        0.3625,
    ]


def test_differences_are_paired_so_a_near_copy_of_r0_is_shown_non_inferior():
    """R=50 differs from R=0 on 4 of 1000 scans per seed (2 lost, 2 gained), as a classifier trained on mostly
    the same data would: each arm's own accuracy interval spans about 0.04, the paired difference's bounds stay
    within +-0.005. Bootstrapped on separate draws, the bounds would spread like the arms' and straddle -margin."""
    arms = {(0, 100): arm(REFERENCE), (50, 100): arm(paired(REFERENCE, lost=2, gained=2), ratio=50)}
    summary, table = summarize(families("replace", arms, keeps=[100], ratios=[50]), CONFIG, "replace")
    row = table.set_index("x").loc[50]
    assert row["accuracy_high"] - row["accuracy_low"] > 0.03
    assert -0.005 < row["delta_lower"] <= 0.0 <= row["delta_upper"] < 0.005 and row["delta"] == 0.0
    assert row["verdict"] == "non-inferior" and summary["keep100"]["r_max"] == 50


def test_the_smallest_r_is_a_candidate_and_a_sequence_that_never_stops_says_none():
    """R=1 (the smallest sweep.ratios allows), identical to R=0: non-inferior, R_max = 1, stop "none"; figures
    keep six decimals."""
    reference = arm(REFERENCE)
    reference.metrics["log_loss"] = 1 / 3
    summary, table = summarize(
        families("replace", {(0, 100): reference, (1, 100): arm(REFERENCE, ratio=1)}, keeps=[100], ratios=[1]),
        CONFIG,
        "replace",
    )
    assert (summary["keep100"]["r_max"], summary["keep100"]["stopped_at"], summary["keep100"]["stop"]) == (
        1,
        None,
        "none",
    )
    assert summary["keep100"]["log_loss"]["0"] == 0.333333 and list(summary["keep100"]["lower"]) == ["1"]
    assert table.set_index("x").loc[1, "p_holm"] == 1.0


def test_the_headline_keeps_six_decimals_of_every_margin_and_bound():
    """metrics/summary.json (what `dvc exp show` compares) rounds the resolvable margins and the lower bound to
    six decimals. Three seeds over 300 scans make every difference a multiple of 1/900, whose decimals never
    end, so the rounding is visible."""
    three = np.random.default_rng(2).random((3, 300)) < 0.85
    arms = {(0, 100): arm(three), (50, 100): arm(paired(three, lost=4, gained=1), ratio=50)}
    summary, table = summarize(families("replace", arms, keeps=[100], ratios=[50]), CONFIG, "replace")
    row, block = table.set_index("x").loc[50], summary["keep100"]
    for figure, value in ((block["resolvable_margin"], row["half_width"]),
                          (block["test_set_margin"], row["test_half_width"]),
                          (block["lower"]["50"], row["delta_lower"])):  # fmt: skip
        assert value != round(value, 6)  # more decimals than the headline keeps
        assert figure == round(value, 6)


def test_bootstrap_draws_keep_the_test_sets_class_make_up():
    """Real test patients have one class each. The report draws patients within each class, so every draw
    keeps the test set's class counts (a draw without one class has no AUROC): an arm right on every class-0
    scan and wrong on every class-1 one then scores exactly the class-0 share, 30 of 50 patients, in every
    draw, and its accuracy interval has no width. Drawn across classes, it would spread."""
    labels = np.repeat((np.arange(50) >= 30).astype(int), 2)  # patients 0-29 class 0, 30-49 class 1, two scans each
    hits = np.tile(labels == 0, (2, 1))
    p0 = np.where(labels == 0, np.where(hits, 0.9, 0.1), np.where(hits, 0.1, 0.9))
    runs = Runs(probs=np.stack([p0, 1 - p0], axis=2), labels=labels, patients=np.arange(100) // 2)
    reference = Arm(runs=runs, metrics=arm(hits).metrics)
    _, table = summarize(
        families("replace", {(0, 100): reference, (50, 100): reference}, keeps=[100], ratios=[50]), CONFIG, "replace"
    )
    assert table["accuracy_low"].tolist() == pytest.approx([0.6, 0.6]) and table[
        "accuracy_high"
    ].tolist() == pytest.approx([0.6, 0.6])


def test_the_same_report_seed_gives_the_same_monte_carlo_p():
    """500 patients are too many to enumerate: p comes from 2000 random sign patterns. report.seed fixes them,
    so a rerun of the report stage reproduces every p (a DVC output that changed on every run would never be
    up to date); another seed draws other patterns."""
    arms = {(0, 100): arm(REFERENCE), (50, 100): arm(paired(REFERENCE, lost=9, gained=4), ratio=50)}
    groups = families("replace", arms, keeps=[100], ratios=[50])
    p = [summarize(groups, config, "replace")[1].set_index("x").loc[50, "p"]
         for config in (CONFIG, CONFIG, dataclasses.replace(CONFIG, seed=1))]  # fmt: skip
    assert 0.01 < p[0] < 1 and p[0] == p[1] and p[2] != p[0]


def test_an_inconclusive_r_gives_no_number_and_says_why():
    few = np.random.default_rng(1).random((2, 60)) < 0.85  # 30 patients: a 1-point margin is far below the noise
    arms = {(0, 100): arm(few), (50, 100): arm(paired(few, lost=1), ratio=50)}
    summary, table = summarize(families("replace", arms, keeps=[100], ratios=[50]), CONFIG, "replace")
    block = summary["keep100"]
    assert (block["r_max"], block["r_max_shown"], block["stop"]) == (None, 0, "inconclusive")
    assert (
        block["resolvable_margin"] > CONFIG.margin and 0 < block["test_set_margin"] <= block["resolvable_margin"] + 1e-9
    )
    sentence = verdict_sentence("keep100", block, metric="accuracy", margin=CONFIG.margin, confidence=CONFIG.confidence)
    assert "not determined" in sentence and f"{block['resolvable_margin']:.3f}" in sentence


def test_data_mode_compares_filled_cohorts_with_all_real_patients(tmp_path):
    arms = {(0, 100): arm(REFERENCE), (100, 100): arm(REFERENCE, ratio=100)}
    for keep, lost in ((50, 5), (25, 40)):
        arms[(0, keep)] = arm(paired(REFERENCE, lost=lost + 30), keep=keep)  # fewer patients, nothing in their place
        arms[(100, keep)] = arm(paired(REFERENCE, lost=lost), keep=keep, ratio=100, share=(100 - keep) / 100)
    groups = families("data", arms, keeps=[100, 50, 25], ratios=[100])
    assert [g.name for g in groups] == ["data", "real_only"] and sorted(groups[0].candidates) == [50, 75]
    summary, table = summarize(groups, CONFIG, "data")
    assert "real_only" not in summary  # shown, not decided on
    assert (summary["data"]["r_max"], summary["data"]["stopped_at"]) == (50, 75)
    for name in ("data", "real_only"):  # the report lists each family's rows by ascending share, as its x axis runs
        assert table.loc[table["family"] == name, "x"].tolist() == [0, 50, 75]
    shares = table[table["family"] == "data"].set_index("x")["synthetic_share"]
    assert shares.loc[50] == pytest.approx(0.5) and shares.loc[75] == pytest.approx(0.75)
    save_ratio_plot(summary, table, x_label=groups[0].x_label, path=tmp_path / "plot.png", study=STUDY_ACCURACY)
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    text = markdown_report(
        summary,
        table,
        {
            100: {
                "domain_fid": 3.0,
                "domain_fid_floor": 2.5,
                "domain_fid_floor_sd": 0.4,
                "detector_auroc": 0.8,
                "detector_auroc_ci_low": 0.7,
                "detector_auroc_ci_high": 0.9,
            }
        },
    )
    assert "## data" in text and "## real_only" in text and "R_max = 50%" in text
    assert "| domain FID | 3 | 2.5 (0.4) |" in text and "0.800 (0.700-0.900)" in text


@pytest.mark.parametrize("metric", ["log_loss", "auroc"])
def test_the_decision_metric_is_a_param_away(metric: str):
    arms = {(0, 100): arm(REFERENCE), (50, 100): arm(paired(REFERENCE, lost=150), ratio=50)}
    config = ReportConfig(metric=metric, margin=0.01, confidence=0.95, bootstrap=100, permutations=200, seed=0)
    summary, table = summarize(families("replace", arms, keeps=[100], ratios=[50]), config, "replace")
    assert summary["metric"] == metric and summary["keep100"]["stop"] == "inferior"
    assert table.set_index("x").loc[50, "delta"] < 0  # worse is negative whichever way the metric points


# --- what the report prints: fixed tables in, exact text out ---

BLOCK = {"r_max": 25, "r_max_shown": 25, "stopped_at": 100, "stop": "inferior", "resolvable_margin": 0.0123,
         "test_set_margin": 0.0081, "accuracy": {"0": 0.9, "100": 0.85, "25": 0.8964}, "log_loss": {"0": 0.3},
         "lower": {"25": -0.01}}  # fmt: skip
SYNTHETIC = {  # as read_synthetic orders them: largest cohort first
    100: {"domain_fid": 3.0, "domain_fid_floor": 2.5, "domain_fid_floor_sd": 0.4,
          "domain_recall": 0.5, "domain_recall_floor": 0.75,
          "domain_precision": 0.875, "domain_precision_floor": 0.9,
          "domain_coverage": 0.625, "domain_coverage_floor": 0.8, "domain_coverage_floor_sd": 0.05,
          "detector_auroc": 0.55, "detector_auroc_ci_low": 0.45, "detector_auroc_ci_high": 0.65,
          "memorized_share_features": 0.0625, "memorized_share_features_floor": 0.0625},
    25: {"domain_fid": 4.5, "domain_fid_floor": 2.25,
         "detector_auroc": 0.71, "detector_auroc_ci_low": 0.6, "detector_auroc_ci_high": 0.8,
         "memorized_share_features": 0.125, "memorized_share_features_floor": 0.05},
}  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"stop": "none", "stopped_at": None, "r_max": 100},
         "keep100: R_max = 100%: every R tested is non-inferior to R=0 (one-sided 95% lower bound of the paired "
         "accuracy difference above -0.02)."),
        ({}, "keep100: R_max = 25%: R=100% is shown to cost more than 0.02 (one-sided 95% lower bound of the paired "
             "accuracy difference above -0.02 for every R up to 25%)."),
        ({"stop": "inconclusive", "r_max": None, "r_max_shown": 0, "stopped_at": 25},
         "keep100: R_max not determined at margin 0.02: R=25% is inconclusive. "
         "These runs resolve margins of about 0.012 or more; "
         "the test set alone, seeds held fixed, 0.008 (more seeds narrow the difference). Non-inferior up to R=0%."),
    ],
)  # fmt: skip
def test_verdict_sentences(changes: dict, sentence: str):
    block = {**BLOCK, **changes}
    assert verdict_sentence("keep100", block, metric="accuracy", margin=0.02, confidence=0.95) == sentence


def test_terminal_summary_lists_verdicts_accuracy_by_r_and_each_cohorts_scans():
    summary = {"metric": "accuracy", "margin": 0.02, "confidence": 0.95, "mode": "replace", "keep100": BLOCK}
    assert terminal_summary(summary, SYNTHETIC, "plots").splitlines() == [
        "R_max: largest R shown non-inferior to R=0 on accuracy at margin 0.02 (95% one-sided):",
        "  " + verdict_sentence("keep100", BLOCK, metric="accuracy", margin=0.02, confidence=0.95),
        "    accuracy by R: R=0 0.900, R=25 0.896, R=100 0.850",
        "  synthetic scans, cohort keep 100: domain FID 3 (real floor 2.5), "
        "detector AUROC 0.55 (0.45-0.65; 0.5 = indistinguishable), memorized 0.06 (real 0.06)",
        "  synthetic scans, cohort keep 25: domain FID 4.5 (real floor 2.25), "
        "detector AUROC 0.71 (0.60-0.80; 0.5 = indistinguishable), memorized 0.12 (real 0.05)",
        "Report: plots/report.md; figures: plots/accuracy_vs_ratio.png, plots/samples_keep_*.png; "
        "every curve: dvc plots show (dvc_plots/index.html, works offline)",
    ]  # fmt: skip
    assert headline({**summary, "keep100": {**BLOCK, "n_test": 10}}) == {
        "metric": "accuracy",
        "margin": 0.02,
        "confidence": 0.95,
        "keep100": {key: BLOCK[key] for key in HEADLINE_KEYS},
    }


def test_markdown_report_prints_every_figure_of_the_table():
    """Families in the table's order (keep25 first, shown without a verdict), cohorts' scans largest first."""
    row = dict(synthetic_share=0.0, accuracy=0.9, accuracy_low=0.88, accuracy_high=0.92, log_loss=0.3,
               log_loss_low=0.25, log_loss_high=0.35, f1=0.89, auroc=0.95, ece=0.05)  # fmt: skip
    tested = dict(delta=-0.025, delta_lower=-0.04, delta_upper=-0.01, verdict="inconclusive", p=0.0123, p_holm=0.0246)
    table = pd.DataFrame([
        {**row, "family": "keep25", "x": 0}, {**row, **tested, "family": "keep25", "x": 1, "accuracy": 0.5},
        {**row, "family": "keep100", "x": 0},
        {**row, **tested, "family": "keep100", "x": 50, "synthetic_share": 0.5, "accuracy": 0.875},
    ])  # fmt: skip
    summary = {"metric": "accuracy", "margin": 0.02, "confidence": 0.95, "mode": "replace",
               "keep100": {**BLOCK, "stop": "inconclusive", "r_max": None, "r_max_shown": 0,
                           "stopped_at": 50}}  # fmt: skip
    header = ["| x % | synthetic share | accuracy (CI) | log-loss (CI) | accuracy difference (one-sided bounds) "
              "| verdict | p (Holm) | F1 | AUROC | ECE |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    reference = (
        "| 0 | 0.00 | 0.9000 (0.8800-0.9200) | 0.3000 (0.2500-0.3500) | reference | | | 0.8900 | 0.9500 | 0.0500 |"
    )
    compared = (
        " (0.8800-0.9200) | 0.3000 (0.2500-0.3500) | -0.0250 (-0.0400, -0.0100) | inconclusive | 0.0123 (0.0246) "
        "| 0.8900 | 0.9500 | 0.0500 |"
    )
    assert markdown_report(summary, table, SYNTHETIC) == "\n".join([
        "# Ratio sweep", "",
        "mix.mode = replace; decided on accuracy at margin 0.02; "
        "intervals: 95% bootstrap over test patients crossed with seeds; "
        "p: patient-level sign-flip permutation test of the seed-averaged paired difference, "
        "Holm-adjusted over every comparison.",
        "", "## keep25", "", *header, reference, "| 1 | 0.00 | 0.5000" + compared,
        "", "## keep100", "",
        verdict_sentence("keep100", summary["keep100"], metric="accuracy", margin=0.02, confidence=0.95), "",
        *header, reference, "| 50 | 0.50 | 0.8750" + compared,
        "", "## Synthetic scans of cohort keep 100", "",
        "| figure | synthetic | real floor (sd over halvings) | catches |", "|---|---|---|---|",
        "| domain FID | 3 | 2.5 (0.4) | distribution shift; the floor is real vs real, other patients |",
        "| recall | 0.5 | 0.75 | missing variety |",
        "| precision | 0.875 | 0.9 | implausible scans |",
        "| coverage | 0.625 | 0.8 (0.05) | missing variety, robust to outliers |",
        "| memorized (features) | 0.0625 | 0.0625 | copies of training patients |",
        "| detector AUROC | 0.550 (0.450-0.650) | 0.5 | a fingerprint a classifier can learn |",
        "", "## Synthetic scans of cohort keep 25", "",
        "| figure | synthetic | real floor (sd over halvings) | catches |", "|---|---|---|---|",
        "| domain FID | 4.5 | 2.25 | distribution shift; the floor is real vs real, other patients |",
        "| memorized (features) | 0.125 | 0.05 | copies of training patients |",
        "| detector AUROC | 0.710 (0.600-0.800) | 0.5 | a fingerprint a classifier can learn |",
    ]) + "\n"  # fmt: skip


@pytest.mark.parametrize("preset", ["recipe", "smoke"])
def test_a_smoke_run_says_so_on_the_first_line_of_the_answer_and_the_report(preset: str):
    """quickstart.sh's smoke preset: its numbers are never read as the recipe's; the recipe's answer is unchanged."""
    summary = {"metric": "accuracy", "margin": 0.02, "confidence": 0.95, "mode": "replace", "preset": preset,
               "keep100": BLOCK}  # fmt: skip
    table = pd.DataFrame([{"family": "keep100", "x": 0, "synthetic_share": 0.0, "accuracy": 0.9, "accuracy_low": 0.88,
                           "accuracy_high": 0.92, "log_loss": 0.3, "log_loss_low": 0.25, "log_loss_high": 0.35,
                           "f1": 0.89, "auroc": 0.95, "ece": 0.05}])  # fmt: skip
    first = terminal_summary(summary, {}, "plots").splitlines()[0]
    report = markdown_report(summary, table, {}).splitlines()
    if preset == "recipe":
        assert first.startswith("R_max: ") and report[2].startswith("mix.mode = ")
    else:
        assert first.startswith("SMOKE PRESET (report.preset=smoke") and "not the recipe's answer" in first
        assert report[2] == f"**{first}**" and report[4].startswith("mix.mode = ")


def test_markdown_report_states_a_shown_verdict_on_the_metric_it_was_decided_on():
    """A family whose sequence never stopped: its sentence under the heading names the decision metric
    (log-loss here) in the bound it quotes, as the settings line above it does."""
    row = dict(synthetic_share=0.0, accuracy=0.9, accuracy_low=0.88, accuracy_high=0.92, log_loss=0.3,
               log_loss_low=0.25, log_loss_high=0.35, f1=0.89, auroc=0.95, ece=0.05)  # fmt: skip
    table = pd.DataFrame([{**row, "family": "keep100", "x": 0},
                          {**row, "family": "keep100", "x": 100, "delta": 0.001, "delta_lower": -0.004,
                           "delta_upper": 0.006, "verdict": "non-inferior", "p": 0.5, "p_holm": 0.5}])  # fmt: skip
    summary = {"metric": "log_loss", "margin": 0.02, "confidence": 0.95, "mode": "replace",
               "keep100": {**BLOCK, "stop": "none", "stopped_at": None, "r_max": 100}}  # fmt: skip
    lines = markdown_report(summary, table, {}).splitlines()
    assert lines[4:7] == ["## keep100", "",
                          "keep100: R_max = 100%: every R tested is non-inferior to R=0 (one-sided 95% lower bound "
                          "of the paired log_loss difference above -0.02)."]  # fmt: skip


def test_each_mode_labels_its_x_axis():
    arms = {(r, k): arm(REFERENCE) for r in (0, 50, 100) for k in (100, 25)}
    assert [f.x_label for f in families("replace", arms, keeps=[100], ratios=[50])] == [
        "R: synthetic share of the CNV examples in every batch (%)"
    ]
    assert [f.x_label for f in families("add", arms, keeps=[100], ratios=[50])] == [
        "R: synthetic share of the CNV examples in every batch (%), on top of the real ones"
    ]
    assert [f.x_label for f in families("data", arms, keeps=[100, 25], ratios=[100])] == [
        "synthetic share of the CNV training data (%): the cohort's left-out patients' scans replaced",
        "share of the CNV training patients left out, nothing in their place (%)",
    ]
    assert [(f.name, f.decides) for f in families("replace", arms, keeps=[25, 100], ratios=[50, 100])] == [
        ("keep100", True),
        ("keep25", True),
    ]
    # real_only is shown beside the data family, never decided on
    assert [(f.name, f.decides) for f in families("data", arms, keeps=[100, 25], ratios=[100])] == [
        ("data", True),
        ("real_only", False),
    ]


def params_in(tmp_path, classes: tuple[str, ...] = ("CNV", "NORMAL")) -> Params:
    """params.yaml with every output path under tmp_path, two seeds, keeps 100 and 25, R = 50."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["paths"] = {key: str(tmp_path / key) for key in raw["paths"]}
    raw["sweep"] = {**raw["sweep"], "ratios": [50], "seeds": [0, 1], "keep": [100, 25], "synthetic_class": "CNV"}
    raw["prepare"] = {**raw["prepare"], "classes": list(classes)}
    return params_from_dict(raw)


def test_load_arm_stacks_the_seeds_by_class_name_and_refuses_other_test_scans(tmp_path):
    params = params_in(tmp_path)
    for seed in (0, 1):
        path = predictions_path(params, ratio=50, seed=seed, keep=25)
        path.parent.mkdir(parents=True, exist_ok=True)
        predictions = pd.DataFrame({"file": ["b.png", "a.png", "c.png"], "label": [1, 0, 0], "patient": [8, 7, 7],
                                    "prob_NORMAL": [0.8, 0.3 + seed / 10, 0.6],
                                    "prob_CNV": [0.2, 0.7 - seed / 10, 0.4]})  # fmt: skip
        predictions.to_csv(path, index=False)
    metrics = classifier_metrics_path(params, 50, 25)
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps([{"seed": 0, "accuracy": 0.5}, {"seed": 1, "accuracy": 0.75}]))
    arm, scans = load_arm(params, ratio=50, keep=25, scans=None)
    assert scans == ["b.png", "a.png", "c.png"]
    np.testing.assert_allclose(
        arm.runs.probs[:, :, 0], [[0.2, 0.7, 0.4], [0.2, 0.6, 0.4]]
    )  # prob_CNV first, as classes order it
    np.testing.assert_array_equal(arm.runs.labels, [1, 0, 0])
    np.testing.assert_array_equal(arm.runs.patients, [8, 7, 7])
    assert arm.runs.positive == 0 and arm.metrics["accuracy"].tolist() == [0.5, 0.75]
    assert load_arm(params, ratio=50, keep=25, scans=scans)[1] == scans
    with pytest.raises(ValueError, match=r"seed_0.csv: test scans differ from the other runs'"):
        load_arm(params, ratio=50, keep=25, scans=["a.png", "b.png", "c.png"])


def test_load_arm_ranks_the_synthetic_class_for_auroc_wherever_classes_put_it(tmp_path):
    """prepare.classes listing NORMAL first puts CNV (the synthetic class, whose AUROC the report ranks) at
    index 1: the runs must rank column 1, not the default column 0, or AUROC would score the other class."""
    params = params_in(tmp_path, classes=("NORMAL", "CNV"))
    for seed in (0, 1):
        path = predictions_path(params, ratio=50, seed=seed, keep=25)
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {
                "file": ["b.png", "a.png"],
                "label": [1, 0],
                "patient": [8, 7],
                "prob_NORMAL": [0.2, 0.7],
                "prob_CNV": [0.8, 0.3],
            }
        ).to_csv(path, index=False)  # label 1 is CNV here
    metrics = classifier_metrics_path(params, 50, 25)
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps([{"seed": 0, "accuracy": 0.5}, {"seed": 1, "accuracy": 0.5}]))
    arm, _ = load_arm(params, ratio=50, keep=25, scans=None)
    assert arm.runs.positive == 1
    np.testing.assert_allclose(arm.runs.probs[0], [[0.2, 0.8], [0.7, 0.3]])  # prob_NORMAL first, as classes order it


def test_training_curves_is_one_long_table_of_every_logged_curve(tmp_path):
    params = params_in(tmp_path)
    curves = {generator_files(params, 25).live: {"loss": [0.5, 0.4]},
              classifier_live_path(params, ratio=50, seed=1, keep=100): {"val_accuracy": [0.7, 0.8, 0.85],
                                                         "train_loss": [0.9, 0.6, 0.5]}}  # fmt: skip
    for folder, metrics in curves.items():
        (folder / "plots" / "metrics").mkdir(parents=True)
        for name, values in metrics.items():
            pd.DataFrame({"step": range(len(values)), name: values}).to_csv(
                folder / "plots" / "metrics" / f"{name}.tsv", sep="\t", index=False
            )
    table = training_curves(params)
    assert table.columns.tolist() == ["run", "metric", "step", "value"]
    assert table.groupby(["run", "metric"])["value"].apply(list).to_dict() == {
        ("finetune keep 25", "loss"): [0.5, 0.4],
        ("ratio_50_keep_100 seed 1", "train_loss"): [0.9, 0.6, 0.5],
        ("ratio_50_keep_100 seed 1", "val_accuracy"): [0.7, 0.8, 0.85],
    }
    assert table.loc[table["metric"] == "val_accuracy", "step"].tolist() == [0, 1, 2]
    # rows numbered 0..n-1 across every run's curves, not restarting per file: a row label names one point
    assert table.index.tolist() == list(range(8))


def three_class_arm(right: np.ndarray, ratio: int = 0) -> Arm:
    """Runs over classes A, B, C (patients of one class, two scans each) called right where `right` (seed, scan)."""
    labels = np.repeat([0, 1, 2], 40)
    called = np.where(right, labels, (labels + 1) % 3)
    probs = np.eye(3)[called] * 0.8 + 0.2 / 3
    runs = Runs(probs=probs, labels=labels, patients=np.arange(len(labels)) // 2)
    rows = pd.DataFrame([dict(ratio=ratio, seed=s, accuracy=r.mean(), f1=0.5, precision=0.5, recall=0.5, auroc=0.9,
                              log_loss=0.5, ece=0.1, synthetic_share=0.0) for s, r in enumerate(right)])  # fmt: skip
    return Arm(runs=runs, metrics=rows)


def test_per_class_recall_pairs_each_class_with_the_reference_on_the_same_patients():
    """With more than two classes, the table holds each class's recall and the interval of its paired change:
    B's recall rises from 0 to 0.75 at R=100, A and C are unchanged (an interval of no width)."""
    reference = np.ones((2, 120), bool)
    reference[:, 40:80] = False  # B never right at R=0
    candidate = reference.copy()
    candidate[:, 40:70] = True  # 30 of B's 40 scans right at R=100
    arms = {(0, 100): three_class_arm(reference), (100, 100): three_class_arm(candidate, ratio=100)}
    groups = families("replace", arms, keeps=[100], ratios=[100])
    _, table = summarize(groups, CONFIG, "replace", ("A", "B", "C"))
    row = table.set_index("x").loc[100]
    assert (row["recall_A"], row["recall_B"], row["recall_C"]) == (1.0, 0.75, 1.0)
    assert table.set_index("x").loc[0, "recall_B"] == 0.0
    assert 0.5 < row["recall_B_delta_low"] < 0.75 < row["recall_B_delta_high"] <= 1.0  # patients resampled
    assert row["recall_A_delta_low"] == row["recall_A_delta_high"] == 0.0
    summary, _ = summarize(groups, CONFIG, "replace", ("A", "B", "C"))
    text = markdown_report(summary, table, {})
    assert "| x % | A | B | C |" in text
    assert f"| 100 | 1.000 (+0.000; +0.000 to +0.000) | 0.750 (+0.750; {row['recall_B_delta_low']:+.3f} to " in text
    _, binary = summarize(groups, CONFIG, "replace", ("A", "B"))  # two classes: no per-class columns
    assert not [c for c in binary.columns if c.startswith("recall_")]


def test_read_synthetic_keys_each_cohort_and_with_several_classes_each_class(tmp_path):
    """One synthetic class: a cohort's flat figures, keyed by keep, largest first. Several: the stage writes
    them per class, and each (cohort, class) is one entry the report prints under its own heading."""
    params = params_in(tmp_path)
    for keep, fid in ((25, 4.0), (100, 3.0)):
        path = generator_files(params, keep).synthetic_detail
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"keep": keep, "domain_fid": fid}))
    assert read_synthetic(params) == {100: {"keep": 100, "domain_fid": 3.0}, 25: {"keep": 25, "domain_fid": 4.0}}
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["paths"] = {key: str(tmp_path / key) for key in raw["paths"]}
    raw["prepare"]["classes"] = ["CNV", "DME", "DRUSEN", "NORMAL"]
    raw["sweep"] = {**raw["sweep"], "keep": [100], "synthetic_class": ["DME", "DRUSEN"]}
    raw["finetune"] = {**raw["finetune"], "target_class": ["DME", "DRUSEN"], "class_conditional": True}
    several = params_from_dict(raw)
    dme, drusen = ({"domain_fid": fid, "domain_fid_floor": 2.0} for fid in (5.0, 6.0))
    generator_files(several, 100).synthetic_detail.write_text(json.dumps({"keep": 100, "DME": dme, "DRUSEN": drusen}))
    figures = read_synthetic(several)
    assert figures == {"100, DME": dme, "100, DRUSEN": drusen}
    summary = {"metric": "accuracy", "margin": 0.02, "confidence": 0.95, "mode": "add"}
    text = markdown_report(summary, pd.DataFrame(columns=["family"]), figures)
    assert (
        text.index("keep 100, DME\n\n| figure |")
        < text.index("| domain FID | 5 |")
        < text.index("keep 100, DRUSEN\n\n| figure |")
        < text.index("| domain FID | 6 |")
    )
    label = families("replace", {(0, 100): None, (50, 100): None}, keeps=[100], ratios=[50],
                     synthetic_classes=("DME", "DRUSEN"))[0].x_label  # fmt: skip
    assert label == "R: synthetic share of the DME/DRUSEN examples in every batch (%)"
