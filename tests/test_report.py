import numpy as np
import pandas as pd
import pytest

from synthratio.report import bootstrap_accuracy, markdown_table, r_max, save_ratio_plot, summarize, sweep_table


def test_r_max_is_the_largest_ratio_within_tolerance():
    assert r_max({0: 0.90, 25: 0.91, 50: 0.895, 75: 0.85, 100: 0.6}, tolerance=0.01) == 50
    assert r_max({0: 0.90, 50: 0.80, 100: 0.89}, tolerance=0.01) == 100  # not "first failure": largest that holds
    assert r_max({0: 0.90, 50: 0.80}, tolerance=0.01) == 0


def test_bootstrap_is_paired_across_ratios():
    hits = np.random.default_rng(0).integers(0, 2, size=(2, 50)).astype(float)
    boot = bootstrap_accuracy({0: hits, 50: hits.copy()}, resamples=200, seed=1)
    np.testing.assert_array_equal(boot[0], boot[50])  # same scans in each draw: identical runs, zero difference


def make_runs(accuracies: dict[int, list[float]], n_test: int = 200):
    rng = np.random.default_rng(0)
    rows, correct = [], {}
    for ratio, per_seed in accuracies.items():
        hits = []
        for seed, accuracy in enumerate(per_seed):
            row = (rng.random(n_test) < accuracy).astype(float)
            hits.append(row)
            rows.append(dict(ratio=ratio, seed=seed, accuracy=row.mean(), f1=row.mean(), precision=0.9, recall=0.9, auroc=0.95, log_loss=0.3))
        correct[ratio] = np.array(hits)
    return pd.DataFrame(rows), correct


def test_summary_numbers(tmp_path):
    runs, correct = make_runs({0: [0.95, 0.95], 50: [0.95, 0.94], 100: [0.6, 0.62]})
    summary = summarize(runs, correct, tolerance=0.02, confidence=0.95, resamples=300)
    assert summary["r_max"] == 50
    assert summary["r_max_ci_low"] <= 50 <= summary["r_max_ci_high"]
    assert set(summary["ratios"]) == {"0", "50", "100"}
    entry = summary["ratios"]["100"]
    assert entry["accuracy_ci_low"] <= entry["accuracy"] <= entry["accuracy_ci_high"]
    assert entry["accuracy_delta_ci_high"] < 0  # a real drop: the interval excludes zero
    assert summary["accuracy_at_100"] == pytest.approx(runs[runs.ratio == 100].accuracy.mean(), abs=1e-6)
    save_ratio_plot(summary, runs, {"domain_fid": 12.5}, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    assert "| 100 |" in markdown_table(summary, {"domain_fid": 12.5})
    assert list(sweep_table(runs).columns[:2]) == ["ratio", "seed"]
