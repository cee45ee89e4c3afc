import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import t as student_t

from synthratio.config import Params, ReportConfig, params_from_dict
from synthratio.figures import save_ratio_plot
from synthratio.inference import Runs, holm
from synthratio.layout import classifier_live_path, classifier_metrics_path, generator_files, predictions_path
from synthratio.report import (
    HEADLINE_KEYS,
    STUDY_ACCURACY,
    Arm,
    attach_generator_figures,
    families,
    generator_figures,
    headline,
    load_arm,
    markdown_report,
    method_line,
    read_synthetic,
    replication_warning,
    summarize,
    terminal_summary,
    training_curves,
    verdict_sentence,
)  # fmt: skip

CONFIG = ReportConfig(metric="accuracy", margin=0.01, alpha=0.05, confidence=0.95, bootstrap=400, seed=0)
N_SCANS = 1000  # 500 patients of two scans


def arm(
    hits: np.ndarray, keep: int = 100, ratio: int = 0, share: float = 0.0, generators: list[int] | None = None
) -> Arm:
    """Two-class runs right (p=0.9 on the true class) where hits is 1, per (model, scan), and their metric rows;
    `generators`: the generator seed of each model (None: one generator, or the real-only reference)."""
    labels = np.tile([0, 1], hits.shape[1] // 2)
    p_true = np.where(hits, 0.9, 0.1)
    p0 = np.where(labels == 0, p_true, 1 - p_true)
    runs = Runs(
        probs=np.stack([p0, 1 - p0], axis=2),
        labels=labels,
        patients=np.arange(hits.shape[1]) // 2,
        generators=None if generators is None else np.array(generators),
    )
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


_RNG = np.random.default_rng(0)
# five classifier seeds that agree on 98% of the scans, as seeds trained on the same data do: their accuracies
# spread by about 0.003, so the seeds' part of a bound leaves room to resolve a 1-point margin
REFERENCE = (_RNG.random(N_SCANS) < 0.9) ^ (_RNG.random((5, N_SCANS)) < 0.01)


def summary_of(arms: dict, config: ReportConfig = CONFIG, keeps=(100,), ratios=(50,), mode="replace"):
    return summarize(families(mode, arms, keeps=list(keeps), ratios=list(ratios)), config, mode)


def test_r_max_stops_at_the_first_r_that_costs_accuracy_even_when_later_ones_recover():
    """The issue's case: {0: .90, 25: .88, 50: .90, 75: .90, 100: .90} at margin 0.01. A point threshold on
    the means returned 100; R=25 is shown to cost 2 points, so R_max is 0."""
    arms = {(0, 100): arm(REFERENCE)}
    arms[(25, 100)] = arm(paired(REFERENCE, lost=20), ratio=25)
    for ratio in (50, 75, 100):
        arms[(ratio, 100)] = arm(paired(REFERENCE, lost=3, gained=3), ratio=ratio)
    summary, table = summary_of(arms, ratios=[25, 50, 75, 100])
    block = summary["keep100"]
    assert (block["r_max"], block["r_max_shown"], block["stopped_at"], block["stop"]) == (0, 0, 25, "inferior")
    assert block["accuracy"]["100"] == pytest.approx(block["accuracy"]["0"])
    assert table.set_index("x").loc[50, "verdict"] == "non-inferior"  # shown, but after the sequence stopped


def test_summary_numbers_lower_bounds_and_holm():
    full = {(0, 100): arm(REFERENCE), (50, 100): arm(paired(REFERENCE, lost=2, gained=2), ratio=50),
            (100, 100): arm(paired(REFERENCE, lost=120), ratio=100)}  # fmt: skip
    scarce_reference = paired(REFERENCE, lost=60)
    scarce = {(0, 25): arm(scarce_reference, keep=25), (50, 25): arm(paired(REFERENCE, lost=10), keep=25, ratio=50),
              (100, 25): arm(paired(REFERENCE, lost=130), keep=25, ratio=100)}  # fmt: skip
    summary, table = summary_of({**full, **scarce}, keeps=[100, 25], ratios=[50, 100])
    assert [k for k in summary if k.startswith("keep")] == ["keep100", "keep25"]
    assert (summary["keep100"]["r_max"], summary["keep100"]["stop"]) == (50, "inferior")
    block = summary["keep100"]
    assert (block["n_test_patients"], block["n_test"], block["generators"], block["seeds"]) == (500, N_SCANS, 1, 5)
    gain = table[(table["family"] == "keep25") & (table["x"] == 50)].iloc[0]
    assert gain["delta"] == pytest.approx(0.05) and gain["delta_lower"] > 0.03 and gain["verdict"] == "non-inferior"
    assert summary["keep25"]["lower"]["50"] == round(gain["delta_lower"], 6)  # the headline keeps 6 decimals
    drop = table[(table["family"] == "keep100") & (table["x"] == 100)].iloc[0]
    assert drop["delta_upper"] < -0.09 and drop["p"] < 1e-3 and drop["p_holm"] >= drop["p"]
    tested = table[table["x"] > 0]
    # every bound is delta -+ t(1 - alpha share, Satterthwaite df) * se, the se the sum of the three parts
    variance = tested[["variance_candidate", "variance_reference", "variance_patients"]].sum(axis=1)
    np.testing.assert_allclose(tested["se"], np.sqrt(variance))
    critical = student_t.ppf(1 - CONFIG.alpha / 2, tested["df"]) * tested["se"]
    np.testing.assert_allclose(tested["delta_lower"], tested["delta"] - critical)
    np.testing.assert_allclose(tested["delta_upper"], tested["delta"] + critical)
    assert (tested["p_holm"] >= tested["p"]).all() and tested["p_holm"].notna().all()
    # adjusted over the four comparisons only: counting the two R=0 rows as tests would inflate every p_holm
    assert tested["p_holm"].tolist() == pytest.approx(holm(tested["p"].tolist())) and len(tested) == 4
    reference = table[table["x"] == 0]
    assert reference["verdict"].isna().all()  # R=0 is the reference, not a comparison
    assert (reference["generators"] == 0).all() and (tested["generators"] == 1).all()
    assert (table["accuracy_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["accuracy_high"]).all()
    assert (
        (table["seeds"] == 5).all() and (table["margin"] == CONFIG.margin).all() and list(table.index) == list(range(6))
    )
    assert table.loc[table["x"] == 0, "p_holm"].isna().all()  # only comparisons are adjusted
    for name in ("keep100", "keep25"):  # power and the margin it reaches at the largest R, as the headline keeps them
        largest = table[(table["family"] == name) & (table["x"] == 100)].iloc[0]
        assert summary[name]["power"] == round(largest["power"], 4)
        assert summary[name]["margin_at_power"] == round(largest["margin_at_power"], 6)
    assert (table["real_scans_of_class"] == 100).all() and table[
        "synthetic_scans"
    ].isna().all()  # not in these runs' metrics
    pd.testing.assert_frame_equal(summary_of({**full, **scarce}, keeps=[100, 25], ratios=[50, 100])[1], table)
    first = table.iloc[0]  # keep100 at R=0: mean -+ t(0.975, 497.7 df) * se, se from 5 seeds and 500 patients
    assert [round(first[key], 4) for key in ("accuracy_low", "accuracy_high", "log_loss_low", "log_loss_high")] == [
        0.8765,
        0.9139,
        0.2946,
        0.3766,
    ]


def test_differences_are_paired_so_a_near_copy_of_r0_is_shown_non_inferior():
    """R=50 differs from R=0 on 4 of 1000 scans per seed (2 lost, 2 gained), as a classifier trained on mostly
    the same data would: each arm's own accuracy interval spans about 0.04, the paired difference's bounds stay
    within +-0.005. Were the arms' test-set variances added as if they had scored other patients, the bound
    would spread like the arms' and straddle -margin."""
    arms = {(0, 100): arm(REFERENCE), (50, 100): arm(paired(REFERENCE, lost=2, gained=2), ratio=50)}
    summary, table = summary_of(arms)
    row = table.set_index("x").loc[50]
    assert row["accuracy_high"] - row["accuracy_low"] > 0.03
    assert -0.005 < row["delta_lower"] <= 0.0 <= row["delta_upper"] < 0.005 and row["delta"] == 0.0
    assert row["variance_patients"] < 0.1 * (row["accuracy_high"] - row["accuracy"]) ** 2
    assert row["verdict"] == "non-inferior" and summary["keep100"]["r_max"] == 50


def test_the_smallest_r_is_a_candidate_and_a_sequence_that_never_stops_says_none():
    """R=1 (the smallest sweep.ratios allows), identical to R=0: non-inferior, R_max = 1, stop "none"; figures
    keep six decimals."""
    reference = arm(REFERENCE)
    reference.metrics["log_loss"] = 1 / 3
    summary, table = summary_of({(0, 100): reference, (1, 100): arm(REFERENCE, ratio=1)}, ratios=[1])
    assert (summary["keep100"]["r_max"], summary["keep100"]["stopped_at"], summary["keep100"]["stop"]) == (
        1,
        None,
        "none",
    )
    assert summary["keep100"]["log_loss"]["0"] == 0.333333 and list(summary["keep100"]["lower"]) == ["1"]
    row = table.set_index("x").loc[1]
    assert row["variance_patients"] == 0 and row["variance_candidate"] == row["variance_reference"] > 0
    assert (row["delta"], row["p"], row["p_holm"]) == (0.0, 1.0, 1.0)


def test_the_headline_keeps_six_decimals_of_every_margin_and_bound():
    """metrics/summary.json (what `dvc exp show` compares) rounds the margin reached at 80% power and the lower
    bound to six decimals, the power to four: t quantiles times a standard error never end."""
    three = np.random.default_rng(2).random((3, 300)) < 0.85
    arms = {(0, 100): arm(three), (50, 100): arm(paired(three, lost=4, gained=1), ratio=50)}
    summary, table = summary_of(arms)
    row, block = table.set_index("x").loc[50], summary["keep100"]
    for figure, value, places in ((block["margin_at_power"], row["margin_at_power"], 6),
                                  (block["lower"]["50"], row["delta_lower"], 6),
                                  (block["power"], row["power"], 4)):  # fmt: skip
        assert value != round(value, places)  # more decimals than the headline keeps
        assert figure == round(value, places)


def test_auroc_draws_keep_the_test_sets_class_make_up():
    """Real test patients have one class each. AUROC's patient variance comes from a patient bootstrap drawn
    within each class, so every draw keeps the test set's class counts: here a single patient of class 1
    among eight, whom one draw in three across classes would leave out (a draw without a class has no AUROC,
    and the variance would be NaN)."""
    labels = np.repeat([0, 0, 0, 1, 0, 0, 0, 0], 2)  # patient 3 is the only one of class 1
    rng = np.random.default_rng(5)
    scores = rng.random((5, 16)) * 0.5 + np.where(labels == 0, 0.4, 0.0)
    runs = Runs(probs=np.stack([scores, 1 - scores], axis=2), labels=labels, patients=np.arange(16) // 2)
    reference = Arm(runs=runs, metrics=arm(np.ones((5, 16), bool)).metrics)
    shifted = np.clip(scores + rng.normal(0, 0.1, scores.shape), 0, 1)
    candidate = Arm(
        runs=Runs(np.stack([shifted, 1 - shifted], axis=2), labels, runs.patients), metrics=reference.metrics
    )
    config = dataclasses.replace(CONFIG, metric="auroc", bootstrap=200)
    _, table = summary_of({(0, 100): reference, (50, 100): candidate}, config)
    row = table.set_index("x").loc[50]
    assert np.isfinite(row["variance_patients"]) and row["variance_patients"] > 0 and np.isfinite(row["delta_lower"])


def test_the_same_report_seed_gives_the_same_auroc_bounds():
    """AUROC's patient variance comes from report.bootstrap draws that report.seed fixes: a rerun of the report
    stage reproduces every figure (a DVC output that changed on every run would never be up to date); another
    seed draws other patients and moves the patient variance a little, the delta not at all."""
    arms = {(0, 100): arm(REFERENCE), (50, 100): arm(paired(REFERENCE, lost=9, gained=4), ratio=50)}
    auroc = dataclasses.replace(CONFIG, metric="auroc", bootstrap=100)
    rows = [summary_of(arms, config)[1].set_index("x").loc[50]
            for config in (auroc, auroc, dataclasses.replace(auroc, seed=1))]  # fmt: skip
    pd.testing.assert_series_equal(rows[0], rows[1])
    assert rows[2]["delta"] == rows[0]["delta"] and rows[2]["variance_patients"] != rows[0]["variance_patients"]
    assert rows[2]["variance_patients"] == pytest.approx(rows[0]["variance_patients"], rel=0.5)


def test_an_inconclusive_r_gives_no_number_and_says_why():
    few = np.random.default_rng(1).random((5, 60)) < 0.85  # 30 patients: a 1-point margin is far below the noise
    arms = {(0, 100): arm(few), (50, 100): arm(paired(few, lost=1), ratio=50)}
    summary, table = summary_of(arms)
    block = summary["keep100"]
    assert (block["r_max"], block["r_max_shown"], block["stop"]) == (None, 0, "inconclusive")
    assert block["margin_at_power"] > CONFIG.margin and block["power"] < 0.8
    sentence = verdict_sentence("keep100", block, metric="accuracy", margin=CONFIG.margin)
    assert "not determined" in sentence and f"power {block['power']:.0%} at this margin" in sentence


def test_the_level_is_split_over_the_regimes():
    """Two regimes decide two R_max: each sequence runs at alpha / 2, so that the chance of any false claim
    over both stays at alpha. R=50 costs 0.6 points (se 0.0023 on 22 df): judged alone at the full alpha its
    lower bound is -0.0099 and clears the 1-point margin; judged beside a second regime, at half of it, the
    bound is -0.0107 and does not."""
    arms = {(0, k): arm(REFERENCE, keep=k) for k in (100, 50)} | {
        (50, k): arm(paired(REFERENCE, lost=6), keep=k, ratio=50) for k in (100, 50)
    }
    alone, alone_table = summary_of(arms, keeps=[100])
    both, both_table = summary_of(arms, keeps=[100, 50])
    assert alone["keep100"]["alpha"] == CONFIG.alpha and alone["alpha"] == CONFIG.alpha
    assert both["keep100"]["alpha"] == both["keep50"]["alpha"] == CONFIG.alpha / 2 and both["alpha"] == CONFIG.alpha
    assert alone["keep100"]["r_max"] == 50 and both["keep100"]["stop"] == both["keep50"]["stop"] == "inconclusive"
    shared, single = both_table.set_index(["family", "x"]).loc[("keep100", 50)], alone_table.set_index("x").loc[50]
    assert (shared["delta"], shared["se"], shared["df"], shared["p"]) == (
        single["delta"], single["se"], single["df"], single["p"]
    )  # fmt: skip
    for row, alpha in ((single, CONFIG.alpha), (shared, CONFIG.alpha / 2)):
        assert row["delta_lower"] == pytest.approx(row["delta"] - student_t.ppf(1 - alpha, row["df"]) * row["se"])
    assert single["delta_lower"] > -CONFIG.margin > shared["delta_lower"]
    shown = verdict_sentence("keep100", alone["keep100"], metric="accuracy", margin=CONFIG.margin)
    assert "one-sided 0.05-level lower bound" in shown and "R_max = 50%" in shown
    assert "one-sided 0.025-level lower bound" in verdict_sentence(
        "keep100", {**both["keep100"], "stop": "none"}, metric="accuracy", margin=CONFIG.margin
    )
    assert "split over 2 regime(s)" in method_line(both) and "split over 1 regime(s)" in method_line(alone)


def test_a_candidates_generator_spread_widens_its_bound():
    """Three generators of five seeds each, the generators 0, 0.5 and 1 point below R=0: read as the three
    generators they are, the candidate's variance is the spread of the three generator means (2 df); read as
    one generator's fifteen seeds, the generator effect hides in the seeds' spread and the bound is narrower
    (-0.0086 against -0.0124), narrow enough to claim what the recipe has not shown. The recipe's verdict must
    count the generator that a rerun redraws."""
    models = np.concatenate([paired(REFERENCE, lost=lost) for lost in (0, 5, 10)])
    generators = list(np.repeat([0, 1, 2], 5))
    nested = arm(models, ratio=50, generators=generators)
    flat = arm(models, ratio=50)
    rows = [summary_of({(0, 100): arm(REFERENCE), (50, 100): candidate})[1].set_index("x").loc[50]
            for candidate in (nested, flat)]  # fmt: skip
    assert (rows[0]["generators"], rows[0]["seeds"], rows[1]["generators"], rows[1]["seeds"]) == (3, 5, 1, 15)
    assert rows[0]["delta"] == rows[1]["delta"] == pytest.approx(-0.005)
    assert rows[0]["variance_patients"] == rows[1]["variance_patients"]
    assert rows[0]["variance_candidate"] > 2 * rows[1]["variance_candidate"] and rows[0]["df"] < rows[1]["df"]
    assert rows[0]["delta_lower"] < rows[1]["delta_lower"] - 0.003
    assert (rows[0]["verdict"], rows[1]["verdict"]) == ("inconclusive", "non-inferior")


def test_data_mode_compares_filled_cohorts_with_all_real_patients_at_the_realised_share(tmp_path):
    """x is the share of the class's training scans that were synthetic in the filled cohort's runs, as the
    classifier stage measured it (set by how many scans the left-out patients had): 0.43 and 0.71 here, where
    the left-out patients were 50% and 75%. The real-only cohorts are shown by the share of patients left out."""
    arms = {(0, 100): arm(REFERENCE), (100, 100): arm(REFERENCE, ratio=100)}
    for keep, lost, share in ((50, 5, 0.43), (25, 40, 0.71)):
        arms[(0, keep)] = arm(paired(REFERENCE, lost=lost + 30), keep=keep)  # fewer patients, nothing in their place
        arms[(100, keep)] = arm(paired(REFERENCE, lost=lost), keep=keep, ratio=100, share=share)
    groups = families("data", arms, keeps=[100, 50, 25], ratios=[100])
    assert [g.name for g in groups] == ["data", "real_only"] and sorted(groups[0].candidates) == [43, 71]
    assert groups[0].reference is arms[(0, 100)] and groups[1].reference is arms[(0, 100)]
    summary, table = summarize(groups, CONFIG, "data")
    assert "real_only" not in summary  # shown, not decided on
    assert summary["data"]["alpha"] == CONFIG.alpha  # real_only takes no share of the level
    assert (summary["data"]["r_max"], summary["data"]["stopped_at"]) == (43, 71)
    # the report lists each family's rows by ascending share, as its x axis runs
    assert table.loc[table["family"] == "data", "x"].tolist() == [0, 43, 71]
    assert table.loc[table["family"] == "real_only", "x"].tolist() == [0, 50, 75]
    shares = table[table["family"] == "data"].set_index("x")["synthetic_share"]
    assert shares.loc[43] == pytest.approx(0.43) and shares.loc[71] == pytest.approx(0.71)
    save_ratio_plot(summary, table, x_label=groups[0].x_label, path=tmp_path / "plot.png", study=STUDY_ACCURACY)
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    text = markdown_report(
        summary,
        table,
        {
            "keep 100, generator 0": {
                "domain_fid": 3.0,
                "domain_fid_floor": 2.5,
                "domain_fid_floor_sd": 0.4,
                "detector_auroc": 0.8,
                "detector_auroc_ci_low": 0.7,
                "detector_auroc_ci_high": 0.9,
            }
        },
    )
    assert "## data" in text and "## real_only" in text and "R_max = 43%" in text
    assert "## Synthetic scans, keep 100, generator 0" in text
    assert "| domain FID | 3 | 2.5 (0.4) |" in text and "0.800 (0.700-0.900)" in text


@pytest.mark.parametrize("shares", [(0.404, 0.396), (0.004, 0.5)])
def test_data_mode_refuses_cohorts_whose_shares_are_one_x_or_none(shares: tuple[float, float]):
    """Two cohorts whose realised shares round to one percent would be one x of the sequence (one silently
    dropped), and a share that rounds to 0 would stand in for the reference: both are refused, naming keeps."""
    arms = {(0, 100): arm(REFERENCE), (100, 100): arm(REFERENCE, ratio=100)}
    for keep, share in zip((50, 25), shares):
        arms[(0, keep)] = arm(REFERENCE, keep=keep)
        arms[(100, keep)] = arm(REFERENCE, keep=keep, ratio=100, share=share)
    with pytest.raises(ValueError, match=r"the cohorts keep \[50, 25\] put \[\d+, \d+\] % synthetic scans"):
        families("data", arms, keeps=[100, 50, 25], ratios=[100])


@pytest.mark.parametrize("metric", ["log_loss", "auroc"])
def test_the_decision_metric_is_a_param_away(metric: str):
    arms = {(0, 100): arm(REFERENCE), (50, 100): arm(paired(REFERENCE, lost=150), ratio=50)}
    config = ReportConfig(metric=metric, margin=0.01, alpha=0.05, confidence=0.95, bootstrap=100, seed=0)
    summary, table = summary_of(arms, config)
    assert summary["metric"] == metric and summary["keep100"]["stop"] == "inferior"
    assert table.set_index("x").loc[50, "delta"] < 0  # worse is negative whichever way the metric points


# --- what the report prints: fixed tables in, exact text out ---

BLOCK = {"r_max": 25, "r_max_shown": 25, "stopped_at": 100, "stop": "inferior", "alpha": 0.025, "generators": 3,
         "seeds": 5, "power": 0.8123, "margin_at_power": 0.0187, "n_test": 1000, "n_test_patients": 500,
         "accuracy": {"0": 0.9, "100": 0.85, "25": 0.8964}, "log_loss": {"0": 0.3},
         "lower": {"25": -0.01}}  # fmt: skip
SYNTHETIC = {  # as read_synthetic orders them: largest cohort first
    "keep 100, generator 0": {"domain_fid": 3.0, "domain_fid_floor": 2.5, "domain_fid_floor_sd": 0.4,
          "domain_recall": 0.5, "domain_recall_floor": 0.75,
          "domain_precision": 0.875, "domain_precision_floor": 0.9,
          "domain_coverage": 0.625, "domain_coverage_floor": 0.8, "domain_coverage_floor_sd": 0.05,
          "detector_auroc": 0.55, "detector_auroc_ci_low": 0.45, "detector_auroc_ci_high": 0.65,
          "memorized_share_features": 0.0625, "memorized_share_features_floor": 0.0625,
          "copying_auroc_features": 0.52, "copying_p_features": 0.3127},
    "keep 25, generator 0": {"domain_fid": 4.5, "domain_fid_floor": 2.25,
         "detector_auroc": 0.71, "detector_auroc_ci_low": 0.6, "detector_auroc_ci_high": 0.8,
         "memorized_share_features": 0.125, "memorized_share_features_floor": 0.05},
}  # fmt: skip
SETTINGS = {"metric": "accuracy", "margin": 0.02, "alpha": 0.025, "confidence": 0.95, "mode": "replace"}


@pytest.mark.parametrize(
    ("changes", "sentence"),
    [
        ({"stop": "none", "stopped_at": None, "r_max": 100},
         "keep100: R_max = 100%: every R tested is non-inferior to R=0 (one-sided 0.025-level lower bound of the "
         "paired accuracy difference above -0.02; 3 generator(s) x 5 seeds, power 81% at this margin)."),
        ({}, "keep100: R_max = 25% (one-sided 0.025-level lower bound of the paired accuracy difference above -0.02 "
             "for every R up to it; 3 generator(s) x 5 seeds, power 81% at this margin). R=100% looks worse by more "
             "than 0.02 (its upper bound is below -0.02; descriptive, not a claim of the sequence)."),
        ({"stop": "inconclusive", "r_max": None, "r_max_shown": 0, "stopped_at": 25, "alpha": 0.0125},
         "keep100: R_max not determined at margin 0.02: R=25% is inconclusive (3 generator(s) x 5 seeds, power 81% "
         "at this margin: the chance a rerun of this size shows a costless R non-inferior; more seeds and generators "
         "raise it). Non-inferior up to R=0%."),
        ({"stop": "none", "stopped_at": None, "r_max": 100, "alpha": 0.0125, "generators": 1, "seeds": 2},
         "keep100: R_max = 100%: every R tested is non-inferior to R=0 (one-sided 0.0125-level lower bound of the "
         "paired accuracy difference above -0.02; 1 generator(s) x 2 seeds, power 81% at this margin)."),
    ],
)  # fmt: skip
def test_verdict_sentences(changes: dict, sentence: str):
    block = {**BLOCK, **changes}
    assert verdict_sentence("keep100", block, metric="accuracy", margin=0.02) == sentence


def test_terminal_summary_lists_verdicts_accuracy_by_r_and_each_generators_scans():
    summary = {**SETTINGS, "keep100": BLOCK}
    assert terminal_summary(summary, SYNTHETIC, "plots").splitlines() == [
        "R_max: largest R shown non-inferior to R=0 on accuracy at margin 0.02, one-sided level 0.025 over every "
        "regime (declared in params.yaml):",
        "  " + verdict_sentence("keep100", BLOCK, metric="accuracy", margin=0.02),
        "    accuracy by R: R=0 0.900, R=25 0.896, R=100 0.850",
        "  synthetic scans, keep 100, generator 0: domain FID 3 (real floor 2.5), "
        "detector AUROC 0.55 (0.45-0.65; 0.5 = indistinguishable), memorized 0.06 (real 0.06)",
        "  synthetic scans, keep 25, generator 0: domain FID 4.5 (real floor 2.25), "
        "detector AUROC 0.71 (0.60-0.80; 0.5 = indistinguishable), memorized 0.12 (real 0.05)",
        "Report: plots/report.md; figures: plots/accuracy_vs_ratio.png, plots/samples_keep_*.png; "
        "every curve: dvc plots show (dvc_plots/index.html, works offline)",
    ]  # fmt: skip


def test_headline_is_twelve_columns_r_max_never_null_bound_at_the_largest_r():
    """metrics/summary.json, the one DVC metric: per regime R_max (or "undetermined": DVC drops a null from every
    view), the stop, the paired difference and its lower bound at the largest R tested (not the first), and the
    regime's own generators' mean FID above floor and detector AUROC, in that column order; settings and
    per-R figures stay in the detail."""
    block = {**BLOCK, "delta": {"25": -0.00361, "100": -0.05012}, "lower": {"25": -0.01, "100": -0.08123}}
    undecided = {**block, "r_max": None, "stop": "inconclusive"}
    summary = attach_generator_figures(
        {**SETTINGS, "keep100": block, "keep25": undecided},
        {100: {"fid_gap": 0.5, "det_auroc": 0.55}, 25: {"fid_gap": 2.25, "det_auroc": 0.7149}},
    )
    assert summary["keep25"]["det_auroc"] == 0.715 and summary["keep100"]["r_max_shown"] == 25  # detail kept
    written = headline(summary)
    assert written == {
        "k100": {"r_max": 25, "stop": "inferior", "delta": -0.0501, "lower": -0.0812, "fid_gap": 0.5,
                 "det_auroc": 0.55},
        "k25": {"r_max": "undetermined", "stop": "inconclusive", "delta": -0.0501, "lower": -0.0812,
                "fid_gap": 2.25, "det_auroc": 0.715},
    }  # fmt: skip
    assert [list(b) for b in written.values()] == [list(HEADLINE_KEYS)] * 2  # dvc exp show's column order
    assert all(value is not None for block in written.values() for value in block.values())


def test_generator_figures_average_each_regimes_own_generators(tmp_path: Path):
    """fid_gap and det_auroc: the mean over a regime's generator seeds of its metrics/synthetic files; data mode's
    family takes the cohorts whose generators it used (keep < 100)."""
    params = params_in(tmp_path, generators=(0, 1, 2))
    values = {(100, 0): (5.0, 2.0, 0.9), (100, 1): (4.0, 2.5, 0.7), (100, 2): (3.0, 2.0, 0.8),
              (25, 0): (9.0, 1.0, 0.6), (25, 1): (7.0, 1.0, 0.8), (25, 2): (8.0, 1.0, 0.7)}  # fmt: skip
    for (keep, g), (fid, floor, auroc) in values.items():
        path = generator_files(params, keep, g).synthetic_metrics
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"domain_fid": fid, "domain_fid_floor": floor, "detector_auroc": auroc}))
    figures = generator_figures(params)
    assert figures[100] == pytest.approx({"fid_gap": 1.8333333, "det_auroc": 0.8})
    assert figures[25] == pytest.approx({"fid_gap": 7.0, "det_auroc": 0.7})
    data = attach_generator_figures({"mode": "data", "data": {"r_max": 50}}, figures)["data"]
    assert data == {"r_max": 50, "fid_gap": 7.0, "det_auroc": 0.7}  # the keep-25 cohort's generators only


def test_markdown_report_prints_every_figure_of_the_table():
    """Families in the table's order (keep25 first, shown without a verdict), generators' scans largest first."""
    row = dict(synthetic_share=0.0, generators=0, seeds=5, accuracy=0.9, accuracy_low=0.88, accuracy_high=0.92,
               log_loss=0.3, log_loss_low=0.25, log_loss_high=0.35, f1=0.89, auroc=0.95, ece=0.05)  # fmt: skip
    tested = dict(generators=3, delta=-0.025, delta_lower=-0.04, delta_upper=-0.01, verdict="inconclusive",
                  p=0.0123, p_holm=0.0246, power=0.4567)  # fmt: skip
    table = pd.DataFrame([
        {**row, "family": "keep25", "x": 0}, {**row, **tested, "family": "keep25", "x": 1, "accuracy": 0.5},
        {**row, "family": "keep100", "x": 0},
        {**row, **tested, "family": "keep100", "x": 50, "synthetic_share": 0.5, "accuracy": 0.875},
    ])  # fmt: skip
    summary = {**SETTINGS, "keep100": {**BLOCK, "stop": "inconclusive", "r_max": None, "r_max_shown": 0,
                                       "stopped_at": 50}}  # fmt: skip
    header = ["| x % | generators x seeds | synthetic share | accuracy (CI) | log-loss (CI) | accuracy difference "
              "(one-sided bounds) | verdict | p (Holm) | power | F1 | AUROC | ECE |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    reference = (
        "| 0 | 5 seeds, real only | 0.00 | 0.9000 (0.8800-0.9200) | 0.3000 (0.2500-0.3500) | reference | | | | "
        "0.8900 | 0.9500 | 0.0500 |"
    )
    compared = (
        " (0.8800-0.9200) | 0.3000 (0.2500-0.3500) | -0.0250 (-0.0400, -0.0100) | inconclusive | 0.0123 (0.0246) "
        "| 0.46 | 0.8900 | 0.9500 | 0.0500 |"
    )
    assert markdown_report(summary, table, SYNTHETIC) == "\n".join([
        "# Ratio sweep", "",
        "mix.mode = replace; decided on accuracy at margin 0.02 and one-sided level 0.025, both declared in "
        "params.yaml before the run; the level is split over 1 regime(s) (Bonferroni), each tested as a fixed "
        "sequence of ascending x. Bounds and p-values: one t model whose variance sums test patients (their "
        "cluster variance), classifier seeds and generator seeds, on Satterthwaite's degrees of freedom "
        "(inference.py); p (two-sided, no difference) Holm-adjusted over every comparison; power: of showing a "
        "costless x non-inferior at the margin; intervals: 95%, same model.",
        "", "## keep25", "", *header, reference, "| 1 | 3 x 5 | 0.00 | 0.5000" + compared,
        "", "## keep100", "",
        verdict_sentence("keep100", summary["keep100"], metric="accuracy", margin=0.02), "",
        *header, reference, "| 50 | 3 x 5 | 0.50 | 0.8750" + compared,
        "", "## Synthetic scans, keep 100, generator 0", "",
        "Floors and compared sets: one scan per held-out patient.", "",
        "| figure | synthetic | real floor (sd over halvings) | catches |", "|---|---|---|---|",
        "| domain FID | 3 | 2.5 (0.4) | distribution shift; the floor is real vs real, other patients |",
        "| recall | 0.5 | 0.75 | missing variety |",
        "| precision | 0.875 | 0.9 | implausible scans |",
        "| coverage | 0.625 | 0.8 (0.05) | missing variety, robust to outliers |",
        "| memorized (features) | 0.0625 | 0.0625 | copies of training patients |",
        "| copying test (features) | P(closer than unseen real) 0.520, p 0.313 | 0.5 | copies: synthetic scans "
        "nearer training scans than other patients' are (Meehan et al. 2020, by patient) |",
        "| detector AUROC | 0.550 (0.450-0.650) | 0.5 | a fingerprint a classifier can learn |",
        "", "## Synthetic scans, keep 25, generator 0", "",
        "Floors and compared sets: one scan per held-out patient.", "",
        "| figure | synthetic | real floor (sd over halvings) | catches |", "|---|---|---|---|",
        "| domain FID | 4.5 | 2.25 | distribution shift; the floor is real vs real, other patients |",
        "| memorized (features) | 0.125 | 0.05 | copies of training patients |",
        "| detector AUROC | 0.710 (0.600-0.800) | 0.5 | a fingerprint a classifier can learn |",
    ]) + "\n"  # fmt: skip


MINIMAL_TABLE = pd.DataFrame([{"family": "keep100", "x": 0, "generators": 0, "seeds": 5, "synthetic_share": 0.0,
                               "accuracy": 0.9, "accuracy_low": 0.88, "accuracy_high": 0.92, "log_loss": 0.3,
                               "log_loss_low": 0.25, "log_loss_high": 0.35, "f1": 0.89, "auroc": 0.95,
                               "ece": 0.05}])  # fmt: skip


@pytest.mark.parametrize(
    ("preset", "says"),
    [
        ("recipe", ""),
        ("smoke", "SMOKE PRESET (report.preset=smoke, quickstart.sh)"),
        ("rehearsal", "REHEARSAL (report.preset=rehearsal, scripts/rehearse_sd15.sh)"),
    ],
)
def test_a_smoke_run_says_so_on_the_first_line_of_the_answer_and_the_report(preset: str, says: str):
    """quickstart.sh's smoke preset and the SD-1.5 rehearsal: their numbers are never read as the recipe's; the
    recipe's answer is unchanged."""
    summary = {**SETTINGS, "preset": preset, "keep100": BLOCK}
    first = terminal_summary(summary, {}, "plots").splitlines()[0]
    report = markdown_report(summary, MINIMAL_TABLE, {}).splitlines()
    if preset == "recipe":
        assert first.startswith("R_max: ") and report[2].startswith("mix.mode = ")
    else:
        assert first.startswith(says) and ("not the recipe's answer" in first or "mean nothing" in first)
        assert report[2] == f"**{first}**" and report[4].startswith("mix.mode = ")


def test_a_smoke_run_under_replicated_names_the_preset_first_then_the_replication():
    summary = {**SETTINGS, "preset": "smoke", "keep100": {**BLOCK, "generators": 1, "seeds": 2}}
    lines = terminal_summary(summary, {}, "plots").splitlines()
    assert lines[0].startswith("SMOKE PRESET") and lines[1].startswith("UNDER-REPLICATED: 1 generator seed(s)")
    assert lines[2].startswith("R_max: ")
    report = markdown_report(summary, MINIMAL_TABLE, {}).splitlines()
    assert report[2:7] == [f"**{lines[0]}**", "", f"**{lines[1]}**", "", method_line(summary)]


@pytest.mark.parametrize(
    ("sizes", "warning"),
    [
        ([(3, 5)], None),
        ([(4, 8), (3, 5)], None),
        ([(1, 5)], "UNDER-REPLICATED: 1 generator seed(s) and 5 classifier seeds (the study preset: 3 and 5); the "
                   "verdicts are about that one trained generator, not the recipe: no generator-to-generator variance "
                   "is in the bounds, so they are NOT CALIBRATED for the recipe."),
        ([(3, 5), (1, 10)], "UNDER-REPLICATED: 1 generator seed(s) and 5 classifier seeds (the study preset: 3 and 5); "
                            "the verdicts are about that one trained generator, not the recipe: no "
                            "generator-to-generator variance is in the bounds, so they are NOT CALIBRATED for the "
                            "recipe."),
        ([(3, 2)], "UNDER-REPLICATED: 3 generator seed(s) and 2 classifier seeds (the study preset: 3 and 5); the "
                   "bounds count every source of variance but rest on few degrees of freedom: wide, with little "
                   "power."),
        ([(2, 5)], "UNDER-REPLICATED: 2 generator seed(s) and 5 classifier seeds (the study preset: 3 and 5); the "
                   "bounds count every source of variance but rest on few degrees of freedom: wide, with little "
                   "power."),
    ],
)  # fmt: skip
def test_replication_warning_names_a_single_generator_and_few_seeds(sizes: list, warning: str | None):
    """One generator: the bounds leave out the generator-to-generator variance, the verdict is about that
    generator. Below the study's 3 generators x 5 seeds: few degrees of freedom. The smallest regime counts."""
    summary = {**SETTINGS, **{f"keep{i}": {**BLOCK, "generators": g, "seeds": s} for i, (g, s) in enumerate(sizes)}}
    assert replication_warning(summary) == ([] if warning is None else [warning])
    assert replication_warning(SETTINGS) == []  # no regime decided: nothing to warn about


def test_markdown_report_states_a_shown_verdict_on_the_metric_it_was_decided_on():
    """A family whose sequence never stopped: its sentence under the heading names the decision metric
    (log-loss here) in the bound it quotes, as the settings line above it does."""
    row = MINIMAL_TABLE.iloc[0].to_dict()
    table = pd.DataFrame([row, {**row, "x": 100, "generators": 3, "delta": 0.001, "delta_lower": -0.004,
                                "delta_upper": 0.006, "verdict": "non-inferior", "p": 0.5, "p_holm": 0.5,
                                "power": 0.9}])  # fmt: skip
    summary = {**SETTINGS, "metric": "log_loss", "keep100": {**BLOCK, "stop": "none", "stopped_at": None, "r_max": 100}}
    lines = markdown_report(summary, table, {}).splitlines()
    assert "decided on log_loss at margin 0.02" in lines[2]
    sentence = (
        "keep100: R_max = 100%: every R tested is non-inferior to R=0 (one-sided 0.025-level lower bound of the "
        "paired log_loss difference above -0.02; 3 generator(s) x 5 seeds, power 81% at this margin)."
    )
    assert lines[4:7] == ["## keep100", "", sentence]
    assert "| log_loss difference (one-sided bounds) |" in lines[8]


def test_each_mode_labels_its_x_axis():
    arms = {(r, k): arm(REFERENCE, share=0.5 if k < 100 else 0.0) for r in (0, 50, 100) for k in (100, 25)}
    assert [f.x_label for f in families("replace", arms, keeps=[100], ratios=[50])] == [
        "R: synthetic share of the CNV examples in every batch (%)"
    ]
    assert [f.x_label for f in families("add", arms, keeps=[100], ratios=[50])] == [
        "R: synthetic share of the CNV examples in every batch (%), on top of the real ones"
    ]
    assert [f.x_label for f in families("data", arms, keeps=[100, 25], ratios=[100])] == [
        "synthetic share of the CNV training scans (%): the cohort's left-out patients' scans replaced",
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


def params_in(tmp_path, classes: tuple[str, ...] = ("CNV", "NORMAL"), generators: tuple[int, ...] = (0,)) -> Params:
    """params.yaml with every output path under tmp_path, two seeds, `generators`, keeps 100 and 25, R = 50."""
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["paths"] = {key: str(tmp_path / key) for key in raw["paths"]} | {"raw": {"kermany": str(tmp_path / "raw")}}
    raw["sweep"] = {**raw["sweep"], "ratios": [50], "seeds": [0, 1], "keep": [100, 25], "synthetic_class": "CNV",
                    "generator_seeds": list(generators)}  # fmt: skip
    raw["prepare"] = {**raw["prepare"], "classes": list(classes)}
    return params_from_dict(raw)


def write_predictions(params: Params, *, ratio: int, keep: int, generator: int | None, frames: list[pd.DataFrame]):
    """One predictions CSV per seed of sweep.seeds and the run's metrics JSON (accuracy = 0.1 * generator + seed)."""
    for seed, frame in zip(params.sweep.seeds, frames):
        path = predictions_path(params, ratio=ratio, seed=seed, keep=keep, generator=generator)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False)
    metrics = classifier_metrics_path(params, ratio, keep, generator)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    base = 0.1 * (generator or 0)
    metrics.write_text(json.dumps([{"seed": s, "accuracy": base + s} for s in params.sweep.seeds]))


def test_load_arm_stacks_generators_by_seeds_by_class_name_and_refuses_other_test_scans(tmp_path):
    """R=50 with generators 0 and 2, seeds 0 and 1: four models, generator-major; R=0 has no generator."""
    params = params_in(tmp_path, generators=(0, 2))

    def frame(value: float) -> pd.DataFrame:
        return pd.DataFrame({"file": ["b.png", "a.png", "c.png"], "label": [1, 0, 0], "patient": [8, 7, 7],
                             "prob_NORMAL": [0.8, 1 - value, 0.6], "prob_CNV": [0.2, value, 0.4]})  # fmt: skip

    for generator in (0, 2):
        write_predictions(params, ratio=50, keep=25, generator=generator,
                          frames=[frame(0.7 - generator / 10 - seed / 100) for seed in (0, 1)])  # fmt: skip
    write_predictions(params, ratio=0, keep=25, generator=None, frames=[frame(0.9), frame(0.8)])
    arm, scans = load_arm(params, ratio=50, keep=25, scans=None)
    assert scans == ["b.png", "a.png", "c.png"]
    np.testing.assert_allclose(arm.runs.probs[:, :, 0], [[0.2, 0.7, 0.4], [0.2, 0.69, 0.4],
                                                         [0.2, 0.5, 0.4], [0.2, 0.49, 0.4]])  # fmt: skip
    np.testing.assert_array_equal(arm.runs.generators, [0, 0, 2, 2])
    np.testing.assert_array_equal(arm.runs.labels, [1, 0, 0])
    np.testing.assert_array_equal(arm.runs.patients, [8, 7, 7])
    assert arm.runs.positive == 0 and arm.metrics["accuracy"].tolist() == pytest.approx([0, 1, 0.2, 1.2])
    reference, same = load_arm(params, ratio=0, keep=25, scans=scans)
    assert same == scans and reference.runs.generators is None and len(reference.runs.probs) == 2
    np.testing.assert_allclose(reference.runs.probs[:, 1, 0], [0.9, 0.8])
    with pytest.raises(ValueError, match=r"ratio_50_keep_25_gen_0/seed_0.csv: test scans differ from the other runs'"):
        load_arm(params, ratio=50, keep=25, scans=["a.png", "b.png", "c.png"])
    swapped = frame(0.5).iloc[[1, 0, 2]]
    write_predictions(params, ratio=50, keep=25, generator=2, frames=[frame(0.5), swapped])
    with pytest.raises(ValueError, match=r"ratio_50_keep_25_gen_2/seed_1.csv: test scans differ"):
        load_arm(params, ratio=50, keep=25, scans=None)  # one generator's seed scored the scans in another order


def test_load_arm_ranks_the_synthetic_class_for_auroc_wherever_classes_put_it(tmp_path):
    """prepare.classes listing NORMAL first puts CNV (the synthetic class, whose AUROC the report ranks) at
    index 1: the runs must rank column 1, not the default column 0, or AUROC would score the other class."""
    params = params_in(tmp_path, classes=("NORMAL", "CNV"))
    frame = pd.DataFrame({"file": ["b.png", "a.png"], "label": [1, 0], "patient": [8, 7], "prob_NORMAL": [0.2, 0.7],
                          "prob_CNV": [0.8, 0.3]})  # fmt: skip  # label 1 is CNV here
    write_predictions(params, ratio=50, keep=25, generator=0, frames=[frame, frame])
    arm, _ = load_arm(params, ratio=50, keep=25, scans=None)
    assert arm.runs.positive == 1
    np.testing.assert_allclose(arm.runs.probs[0], [[0.2, 0.8], [0.7, 0.3]])  # prob_NORMAL first, as classes order it


def write_curves(curves: dict[Path, dict[str, list[float]]]) -> None:
    """dvclive's files: <folder>/plots/metrics/<metric>.tsv with columns step and <metric>."""
    for folder, metrics in curves.items():
        (folder / "plots" / "metrics").mkdir(parents=True)
        for name, values in metrics.items():
            pd.DataFrame({"step": range(len(values)), name: values}).to_csv(
                folder / "plots" / "metrics" / f"{name}.tsv", sep="\t", index=False
            )


def test_training_curves_are_two_long_tables_generators_per_step_classifiers_per_epoch(tmp_path):
    params = params_in(tmp_path, generators=(0, 3))
    run = classifier_live_path(params, ratio=50, seed=1, keep=100, generator=3)
    write_curves({generator_files(params, 25, 3).live: {"loss": [0.5, 0.4]},
                  run: {"val_accuracy": [0.7, 0.8, 0.85], "train_loss": [0.9, 0.6, 0.5]},
                  classifier_live_path(params, ratio=0, seed=0, keep=25): {"val_loss": [0.6, 0.5]}})  # fmt: skip
    generators, classifiers = training_curves(params)
    assert generators.columns.tolist() == ["arm", "run", "metric", "step", "value"]
    assert classifiers.columns.tolist() == ["arm", "run", "metric", "epoch", "value"]
    assert generators.groupby(["arm", "run", "metric"])["value"].apply(list).to_dict() == {
        ("keep25", "keep25 generator 3", "loss"): [0.5, 0.4]
    }
    assert classifiers.groupby(["arm", "run", "metric"], sort=False)["value"].apply(list).to_dict() == {
        ("keep100 R=50", "ratio_50_keep_100_gen_3 seed 1", "train_loss"): [0.9, 0.6, 0.5],
        ("keep100 R=50", "ratio_50_keep_100_gen_3 seed 1", "val_accuracy"): [0.7, 0.8, 0.85],
        ("keep25 R=0", "ratio_0_keep_25 seed 0", "val_loss"): [0.6, 0.5],
    }
    assert classifiers.loc[classifiers["metric"] == "val_accuracy", "epoch"].tolist() == [0, 1, 2]
    # rows numbered 0..n-1 across every run's curves, not restarting per file: a row label names one point
    assert classifiers.index.tolist() == list(range(8))


def test_training_curves_leave_out_a_metric_constant_over_every_run_and_keep_one_constant_in_only_some(tmp_path):
    """A constant learning rate (one value at every step of every generator) is left out; a loss flat in one
    run but not the other stays, as does one constant within each run but not across them (beta). No classifier
    logged a curve: an empty table."""
    params = params_in(tmp_path, generators=(0, 1))
    write_curves(
        {
            generator_files(params, 100, 0).live: {"loss": [0.3, 0.3], "lr": [1e-4, 1e-4], "beta": [1, 1]},
            generator_files(params, 100, 1).live: {"loss": [0.5, 0.4], "lr": [1e-4, 1e-4], "beta": [2, 2]},
        }
    )
    generators, classifiers = training_curves(params)
    assert generators["metric"].unique().tolist() == ["beta", "loss"]
    assert classifiers.empty and classifiers.columns.tolist() == ["arm", "run", "metric", "epoch", "value"]
    assert generators.index.tolist() == list(range(8))


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
    B's recall rises from 0 to 0.75 at R=100, A and C are unchanged (an interval of no width). B's 20 patients
    (15 with both scans now right, 5 with neither): cluster variance 0.00987 on 19 df, 0.75 -+ 0.208."""
    reference = np.ones((2, 120), bool)
    reference[:, 40:80] = False  # B never right at R=0
    candidate = reference.copy()
    candidate[:, 40:70] = True  # 30 of B's 40 scans right at R=100
    arms = {(0, 100): three_class_arm(reference), (100, 100): three_class_arm(candidate, ratio=100)}
    groups = families("replace", arms, keeps=[100], ratios=[100])
    summary, table = summarize(groups, CONFIG, "replace", ("A", "B", "C"))
    row = table.set_index("x").loc[100]
    assert (row["recall_A"], row["recall_B"], row["recall_C"]) == (1.0, 0.75, 1.0)
    assert table.set_index("x").loc[0, "recall_B"] == 0.0
    half = student_t.ppf(0.975, 19) * np.sqrt(20 / 19 * (15 * 0.5**2 + 5 * 1.5**2) / 40**2)
    assert (row["recall_B_delta_low"], row["recall_B_delta_high"]) == pytest.approx((0.75 - half, 0.75 + half))
    assert row["recall_A_delta_low"] == row["recall_A_delta_high"] == 0.0
    text = markdown_report(summary, table, {})
    assert "| x % | A | B | C |" in text
    assert f"| 100 | 1.000 (+0.000; +0.000 to +0.000) | 0.750 (+0.750; {row['recall_B_delta_low']:+.3f} to " in text
    _, binary = summarize(groups, CONFIG, "replace", ("A", "B"))  # two classes: no per-class columns
    assert not [c for c in binary.columns if c.startswith("recall_")]


def test_read_synthetic_keys_each_generator_and_with_several_classes_each_class(tmp_path):
    """One synthetic class: each generator's flat figures, keyed by keep and generator, largest cohort first.
    Several: the stage writes them per class, and each (generator, class) is one entry the report prints under
    its own heading."""
    params = params_in(tmp_path, generators=(0, 4))
    for keep, generator, fid in ((25, 0, 4.0), (25, 4, 4.5), (100, 0, 3.0), (100, 4, 3.5)):
        path = generator_files(params, keep, generator).synthetic_detail
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"keep": keep, "domain_fid": fid}))
    figures = read_synthetic(params)
    assert list(figures) == ["keep 100, generator 0", "keep 100, generator 4", "keep 25, generator 0",
                             "keep 25, generator 4"]  # fmt: skip
    assert figures["keep 25, generator 4"] == {"keep": 25, "domain_fid": 4.5}
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["paths"] = {key: str(tmp_path / key) for key in raw["paths"]} | {"raw": {"kermany": str(tmp_path / "raw")}}
    raw["prepare"]["classes"] = ["CNV", "DME", "DRUSEN", "NORMAL"]
    raw["sweep"] = {**raw["sweep"], "keep": [100], "synthetic_class": ["DME", "DRUSEN"], "generator_seeds": [1]}
    raw["finetune"] = {**raw["finetune"], "target_class": ["DME", "DRUSEN"], "class_conditional": True}
    several = params_from_dict(raw)
    dme, drusen = ({"domain_fid": fid, "domain_fid_floor": 2.0} for fid in (5.0, 6.0))
    path = generator_files(several, 100, 1).synthetic_detail
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"keep": 100, "DME": dme, "DRUSEN": drusen}))
    figures = read_synthetic(several)
    assert figures == {"keep 100, generator 1, DME": dme, "keep 100, generator 1, DRUSEN": drusen}
    summary = {**SETTINGS, "mode": "add"}
    text = markdown_report(summary, pd.DataFrame(columns=["family"]), figures)
    assert (
        text.index("## Synthetic scans, keep 100, generator 1, DME\n\nFloors and compared sets")
        < text.index("| domain FID | 5 |")
        < text.index("## Synthetic scans, keep 100, generator 1, DRUSEN\n\nFloors and compared sets")
        < text.index("| domain FID | 6 |")
    )
    label = families("replace", {(0, 100): None, (50, 100): None}, keeps=[100], ratios=[50],
                     synthetic_classes=("DME", "DRUSEN"))[0].x_label  # fmt: skip
    assert label == "R: synthetic share of the DME/DRUSEN examples in every batch (%)"
