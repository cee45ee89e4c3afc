import numpy as np
import pandas as pd
import pytest

from synthratio.config import ReportConfig
from synthratio.figures import save_ratio_plot
from synthratio.inference import Runs
from synthratio.report import STUDY_ACCURACY, Arm, families, markdown_report, summarize, verdict_sentence

CONFIG = ReportConfig(metric="accuracy", margin=0.01, confidence=0.95, bootstrap=400, permutations=2000, seed=0)
N_SCANS = 1000  # 500 patients of two scans


def arm(hits: np.ndarray, keep: int = 100, ratio: int = 0, share: float = 0.0) -> Arm:
    """Two-class runs right (p=0.9 on the true class) where hits is 1, per (seed, scan), and their metric rows."""
    labels = np.tile([0, 1], hits.shape[1] // 2)
    p_true = np.where(hits, 0.9, 0.1)
    p0 = np.where(labels == 0, p_true, 1 - p_true)
    runs = Runs(probs=np.stack([p0, 1 - p0], axis=2), labels=labels, patients=np.arange(hits.shape[1]) // 2)
    rows = pd.DataFrame([dict(ratio=ratio, seed=s, keep=keep, accuracy=h.mean(), f1=h.mean(), precision=0.9, recall=0.9, auroc=0.95,
                              log_loss=0.3, ece=0.05, synthetic_share=share, real_scans_of_class=100) for s, h in enumerate(hits)])  # fmt: skip
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
    summary, table = summarize(families("replace", arms, [100], [25, 50, 75, 100]), CONFIG, "replace")
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
    summary, table = summarize(families("replace", {**full, **scarce}, [100, 25], [50, 100]), CONFIG, "replace")
    assert [k for k in summary if k.startswith("keep")] == ["keep100", "keep25"]
    assert (summary["keep100"]["r_max"], summary["keep100"]["stop"]) == (50, "inferior")
    assert summary["keep100"]["n_test_patients"] == 500 and summary["keep100"]["n_test"] == N_SCANS
    gain = table[(table["family"] == "keep25") & (table["x"] == 50)].iloc[0]
    assert gain["delta"] == pytest.approx(0.05) and gain["delta_lower"] > 0.03 and gain["verdict"] == "non-inferior"
    assert summary["keep25"]["lower"]["50"] == pytest.approx(gain["delta_lower"], abs=1e-6)
    drop = table[(table["family"] == "keep100") & (table["x"] == 100)].iloc[0]
    assert drop["delta_upper"] < -0.09 and drop["p"] < 1e-3 and drop["p_holm"] >= drop["p"]
    tested = table[table["x"] > 0]
    assert (tested["p_holm"] >= tested["p"]).all() and tested["p_holm"].notna().all()
    reference = table[table["x"] == 0]
    assert reference["verdict"].isna().all()  # R=0 is the reference, not a comparison
    assert (table["accuracy_low"] <= table["accuracy"]).all() and (table["accuracy"] <= table["accuracy_high"]).all()


def test_an_inconclusive_r_gives_no_number_and_says_why():
    few = np.random.default_rng(1).random((2, 60)) < 0.85  # 30 patients: a 1-point margin is far below the noise
    arms = {(0, 100): arm(few), (50, 100): arm(paired(few, lost=1), ratio=50)}
    summary, table = summarize(families("replace", arms, [100], [50]), CONFIG, "replace")
    block = summary["keep100"]
    assert (block["r_max"], block["r_max_shown"], block["stop"]) == (None, 0, "inconclusive")
    assert block["resolvable_margin"] > CONFIG.margin and 0 < block["test_set_margin"] <= block["resolvable_margin"] + 1e-9
    sentence = verdict_sentence("keep100", block, "accuracy", CONFIG.margin, CONFIG.confidence)
    assert "not determined" in sentence and f"{block['resolvable_margin']:.3f}" in sentence


def test_data_mode_compares_filled_cohorts_with_all_real_patients(tmp_path):
    arms = {(0, 100): arm(REFERENCE), (100, 100): arm(REFERENCE, ratio=100)}
    for keep, lost in ((50, 5), (25, 40)):
        arms[(0, keep)] = arm(paired(REFERENCE, lost=lost + 30), keep=keep)  # fewer patients, nothing in their place
        arms[(100, keep)] = arm(paired(REFERENCE, lost=lost), keep=keep, ratio=100, share=(100 - keep) / 100)
    groups = families("data", arms, [100, 50, 25], [100])
    assert [g.name for g in groups] == ["data", "real_only"] and sorted(groups[0].candidates) == [50, 75]
    summary, table = summarize(groups, CONFIG, "data")
    assert "real_only" not in summary  # shown, not decided on
    assert (summary["data"]["r_max"], summary["data"]["stopped_at"]) == (50, 75)
    shares = table[table["family"] == "data"].set_index("x")["synthetic_share"]
    assert shares.loc[50] == pytest.approx(0.5) and shares.loc[75] == pytest.approx(0.75)
    save_ratio_plot(summary, table, groups[0].x_label, tmp_path / "plot.png", STUDY_ACCURACY)
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    text = markdown_report(summary, table, {100: {"domain_fid": 3.0, "domain_fid_floor": 2.5, "domain_fid_floor_sd": 0.4,
                                                  "detector_auroc": 0.8, "detector_auroc_ci_low": 0.7, "detector_auroc_ci_high": 0.9}})
    assert "## data" in text and "## real_only" in text and "R_max = 50%" in text
    assert "| domain FID | 3 | 2.5 (0.4) |" in text and "0.800 (0.700-0.900)" in text


@pytest.mark.parametrize("metric", ["log_loss", "auroc"])
def test_the_decision_metric_is_a_param_away(metric: str):
    arms = {(0, 100): arm(REFERENCE), (50, 100): arm(paired(REFERENCE, lost=150), ratio=50)}
    config = ReportConfig(metric=metric, margin=0.01, confidence=0.95, bootstrap=100, permutations=200, seed=0)
    summary, table = summarize(families("replace", arms, [100], [50]), config, "replace")
    assert summary["metric"] == metric and summary["keep100"]["stop"] == "inferior"
    assert table.set_index("x").loc[50, "delta"] < 0  # worse is negative whichever way the metric points
