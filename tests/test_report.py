import numpy as np
import pandas as pd
import pytest

from synthratio.report import (
    Regime,
    bootstrap_means,
    markdown_table,
    mcnemar_p,
    per_scan,
    r_max,
    save_ratio_plot,
    summarize,
    sweep_table,
)


def test_r_max_is_the_largest_ratio_within_tolerance():
    assert r_max({0: 0.90, 25: 0.91, 50: 0.895, 75: 0.85, 100: 0.6}, tolerance=0.01) == 50
    assert r_max({0: 0.90, 50: 0.80, 100: 0.89}, tolerance=0.01) == 100  # not "first failure": largest that holds
    assert r_max({0: 0.90, 50: 0.80}, tolerance=0.01) == 0


def test_bootstrap_is_paired_across_ratios_and_resamples_seeds():
    hits = np.random.default_rng(0).integers(0, 2, size=(2, 50)).astype(float)
    boot = bootstrap_means({0: hits, 50: hits.copy()}, resamples=200, seed=1)
    np.testing.assert_array_equal(boot[0], boot[50])  # same scans and seeds in each draw: zero difference
    one_seed_right = np.stack([np.ones(50), np.zeros(50)])  # seed 0 always right, seed 1 always wrong
    draws = bootstrap_means({0: one_seed_right}, resamples=400, seed=2)[0]
    assert set(np.unique(draws)) == {0.0, 0.5, 1.0}  # seeds are drawn with replacement too


def test_mcnemar_counts_discordant_pairs():
    reference = np.array([[1, 1, 1, 1, 1, 1, 1, 1, 0, 0]], float)
    worse = np.array([[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], float)  # 8 lost, 0 gained: p = 2 * 0.5**8
    assert mcnemar_p(worse, reference) == pytest.approx(2 * 0.5**8)
    assert mcnemar_p(reference, reference) == 1.0


def test_per_scan_hits_and_losses():
    probs = np.array([[[0.9, 0.1], [0.3, 0.7], [1.0, 0.0]]])
    hits, losses = per_scan(probs, np.array([0, 0, 1]))
    np.testing.assert_array_equal(hits, [[1, 0, 0]])
    assert losses[0, :2] == pytest.approx([-np.log(0.9), -np.log(0.3)]) and np.isfinite(losses).all()


def make_regime(accuracies: dict[int, list[float]], keep: int = 100, n_test: int = 200) -> tuple[pd.DataFrame, Regime]:
    """Runs whose CNV probability is right with the given accuracy per seed, confident (0.9) either way."""
    rng = np.random.default_rng(keep)
    labels = rng.integers(0, 2, n_test)
    rows, probs = [], {}
    for ratio, per_seed in accuracies.items():
        stacked = []
        for seed, accuracy in enumerate(per_seed):
            right = rng.random(n_test) < accuracy
            p_true = np.where(right, 0.9, 0.1)
            p = np.where(labels == 0, p_true, 1 - p_true)
            stacked.append(np.stack([p, 1 - p], axis=1))
            rows.append(dict(keep=keep, ratio=ratio, seed=seed, accuracy=right.mean(), f1=right.mean(), precision=0.9,
                             recall=0.9, auroc=0.95, log_loss=0.3, ece=0.05))
        probs[ratio] = np.stack(stacked)
    return pd.DataFrame(rows), Regime(keep=keep, labels=labels, probs=probs)


def test_summary_numbers(tmp_path):
    full_runs, full = make_regime({0: [0.95, 0.95], 50: [0.95, 0.94], 100: [0.6, 0.62]})
    scarce_runs, scarce = make_regime({0: [0.8, 0.82], 50: [0.9, 0.9], 100: [0.6, 0.6]}, keep=25)
    runs = pd.concat([full_runs, scarce_runs])
    summary = summarize(runs, [scarce, full], tolerance=0.02, confidence=0.95, resamples=300)
    assert list(summary["regimes"]) == ["100", "25"]
    assert summary["r_max"] == 50 and summary["keep25_r_max"] == 50
    assert summary["r_max_ci_low"] <= 50 <= summary["r_max_ci_high"]
    assert summary["acc_r100"] == pytest.approx(full_runs[full_runs.ratio == 100].accuracy.mean(), abs=1e-6)
    assert {"acc_r0", "acc_r50", "keep25_acc_r0", "keep25_acc_r50"} <= set(summary)
    entry = summary["regimes"]["100"]["ratios"]["100"]
    assert entry["accuracy_ci_low"] <= entry["accuracy"] <= entry["accuracy_ci_high"]
    assert entry["log_loss_ci_low"] < entry["log_loss_ci_high"]
    assert entry["accuracy_delta_ci_high"] < 0 and 0 < entry["accuracy_delta_p"] < 1e-6  # a real drop
    gain = summary["regimes"]["25"]["ratios"]["50"]
    assert gain["accuracy_delta_ci_low"] > 0 and gain["accuracy_delta_p"] < 0.01  # synthetic helps scarce data
    assert summary["regimes"]["100"]["ratios"]["0"]["accuracy_delta_p"] == 1.0
    assert summary["accuracy_at_100"] == pytest.approx(summary["acc_r100"])
    save_ratio_plot(summary, runs, {"domain_fid": 12.5, "domain_fid_floor": 3.0, "detector_auroc": 0.7}, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    save_ratio_plot(summary, runs, {}, tmp_path / "bare.png")  # no synthetic metrics: still drawn
    table = markdown_table(summary, {"domain_fid": 12.5})
    assert "## 25% of the real CNV" in table and table.count("| 100 |") == 2
    assert list(sweep_table(runs).columns[:3]) == ["ratio", "seed", "keep"]
