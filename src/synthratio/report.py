"""The sweep's answer: per-R means with bootstrap intervals, R_max, and the figures a reader looks at."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from synthratio.runtime import write_atomically  # noqa: E402

# The student study (2025) this project starts from: accuracy per R (%), Stable Diffusion on Kermany CNV.
STUDY_ACCURACY = {10: 0.8625, 20: 0.8562, 30: 0.8750, 40: 0.8750, 50: 0.9000, 60: 0.8438, 70: 0.8187, 80: 0.7750, 90: 0.6813}
SWEEP_COLUMNS = ("accuracy", "f1", "precision", "recall", "auroc", "log_loss")


def r_max(mean_accuracy: dict[int, float], tolerance: float) -> int:
    """Largest R whose mean accuracy stays within `tolerance` of R=0's (0 when every R>0 costs accuracy)."""
    floor = mean_accuracy[0] - tolerance
    return max(ratio for ratio, accuracy in mean_accuracy.items() if accuracy >= floor - 1e-12)


def bootstrap_accuracy(
    correct: dict[int, np.ndarray], resamples: int, seed: int
) -> dict[int, np.ndarray]:
    """Mean-over-seeds accuracy per R on bootstrap resamples of the test scans.

    correct[R] is (seeds, scans) of 0/1; every R uses the same resampled scans in each draw, so the
    differences between ratios are paired.
    """
    n_scans = next(iter(correct.values())).shape[1]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_scans, size=(resamples, n_scans))
    return {ratio: hits[:, draws].mean(axis=(0, 2)) for ratio, hits in correct.items()}


def summarize(
    runs: pd.DataFrame, correct: dict[int, np.ndarray], tolerance: float, confidence: float, resamples: int, seed: int = 0
) -> dict:
    """summary.json: per R the mean over seeds of every metric, accuracy's bootstrap interval and its paired
    difference to R=0, then R_max with its bootstrap interval."""
    alpha = (1 - confidence) / 2
    boot = bootstrap_accuracy(correct, resamples, seed)
    per_ratio: dict[str, dict[str, float]] = {}
    means = runs.groupby("ratio")[list(SWEEP_COLUMNS)].mean()
    for ratio, row in means.iterrows():
        delta = boot[ratio] - boot[0]
        entry = {name: round(float(row[name]), 6) for name in SWEEP_COLUMNS}
        entry.update(
            accuracy_ci_low=round(float(np.quantile(boot[ratio], alpha)), 6),
            accuracy_ci_high=round(float(np.quantile(boot[ratio], 1 - alpha)), 6),
            accuracy_delta=round(float(row["accuracy"] - means.loc[0, "accuracy"]), 6),
            accuracy_delta_ci_low=round(float(np.quantile(delta, alpha)), 6),
            accuracy_delta_ci_high=round(float(np.quantile(delta, 1 - alpha)), 6),
            seeds=int((runs["ratio"] == ratio).sum()),
        )
        per_ratio[str(ratio)] = entry
    mean_accuracy = {int(r): float(a) for r, a in means["accuracy"].items()}
    r_max_draws = np.array([r_max({r: float(b[i]) for r, b in boot.items()}, tolerance) for i in range(resamples)])
    best = max(mean_accuracy, key=lambda r: (mean_accuracy[r], -r))
    return {
        "r_max": r_max(mean_accuracy, tolerance),
        "r_max_ci_low": int(np.quantile(r_max_draws, alpha, method="lower")),
        "r_max_ci_high": int(np.quantile(r_max_draws, 1 - alpha, method="higher")),
        "tolerance": tolerance,
        "confidence": confidence,
        "best_ratio": int(best),
        "baseline_accuracy": round(mean_accuracy[0], 6),
        "accuracy_at_100": round(mean_accuracy[100], 6) if 100 in mean_accuracy else None,
        "n_test": int(next(iter(correct.values())).shape[1]),
        "ratios": per_ratio,
    }


def save_ratio_plot(summary: dict, runs: pd.DataFrame, synthetic: dict, path: Path) -> None:
    """Accuracy vs R: mean with its bootstrap band, each seed, the R_max tolerance line, the study's curve."""
    ratios = sorted(int(r) for r in summary["ratios"])
    entries = [summary["ratios"][str(r)] for r in ratios]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.fill_between(ratios, [e["accuracy_ci_low"] for e in entries], [e["accuracy_ci_high"] for e in entries],
                    alpha=0.2, label=f"{summary['confidence']:.0%} bootstrap interval")
    ax.plot(ratios, [e["accuracy"] for e in entries], "o-", label="mean over seeds (this run)")
    ax.scatter(runs["ratio"], runs["accuracy"], s=12, color="gray", zorder=3, label="single seeds")
    ax.plot(list(STUDY_ACCURACY), list(STUDY_ACCURACY.values()), "s--", color="tab:red", alpha=0.6,
            label="published study (SD on Kermany)")
    ax.axhline(summary["baseline_accuracy"] - summary["tolerance"], color="black", lw=0.8, ls=":",
               label=f"R=0 minus tolerance {summary['tolerance']}")
    ax.axvline(summary["r_max"], color="tab:green", lw=1, label=f"R_max = {summary['r_max']}%")
    notes = [f"{k} = {v:.3g}" for k, v in synthetic.items() if k in ("domain_fid", "domain_fid_floor", "inception_fid", "detector_auroc")]
    ax.set(xlabel="R: synthetic share of CNV examples per batch (%)", ylabel="test accuracy (real scans)",
           title="Accuracy vs synthetic ratio" + (f"\n{', '.join(notes)}" if notes else ""))
    ax.set_xlim(-3, 103)
    ax.legend(fontsize=7, loc="lower left")
    _save(fig, path)


def save_sample_grid(real: np.ndarray, synthetic: np.ndarray, path: Path, columns: int = 8) -> None:
    """Real (top row) and synthetic (bottom row) scans side by side, at the generator's size."""
    columns = min(columns, len(real), len(synthetic))
    fig, axes = plt.subplots(2, columns, figsize=(1.4 * columns, 3.2), squeeze=False)
    for row, (name, images) in enumerate((("real", real), ("synthetic", synthetic))):
        for col in range(columns):
            axes[row, col].imshow(images[col], cmap="gray", vmin=0, vmax=255)
            axes[row, col].axis("off")
        axes[row, 0].set_title(name, fontsize=9, loc="left")
    _save(fig, path)


def markdown_table(summary: dict, synthetic: dict) -> str:
    """A short markdown report: the per-R table and the headline numbers."""
    lines = [
        "# Ratio sweep",
        "",
        f"R_max = **{summary['r_max']}%** ({summary['confidence']:.0%} CI {summary['r_max_ci_low']}-{summary['r_max_ci_high']}%), "
        f"tolerance {summary['tolerance']} below R=0 accuracy {summary['baseline_accuracy']:.4f}; {summary['n_test']} real test scans.",
        "",
        "| R % | accuracy | CI | delta vs R=0 (CI) | F1 | AUROC | log-loss | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ratio, e in sorted(summary["ratios"].items(), key=lambda item: int(item[0])):
        lines.append(
            f"| {ratio} | {e['accuracy']:.4f} | {e['accuracy_ci_low']:.4f}-{e['accuracy_ci_high']:.4f} | "
            f"{e['accuracy_delta']:+.4f} ({e['accuracy_delta_ci_low']:+.4f}, {e['accuracy_delta_ci_high']:+.4f}) | "
            f"{e['f1']:.4f} | {e['auroc']:.4f} | {e['log_loss']:.4f} | {e['seeds']} |"
        )
    if synthetic:
        lines += ["", "Synthetic scans: " + ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in sorted(synthetic.items()))]
    return "\n".join(lines) + "\n"


def sweep_table(runs: pd.DataFrame, columns: Sequence[str] = SWEEP_COLUMNS) -> pd.DataFrame:
    """plots/ratio_sweep.csv: one row per (ratio, seed), for `dvc plots`."""
    return runs[["ratio", "seed", *columns]].sort_values(["ratio", "seed"]).reset_index(drop=True)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
