"""The sweep's answer, per real-data regime: per-R means with bootstrap intervals over test scans and seeds,
paired tests against R=0, R_max, and the figures a reader looks at."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import binomtest  # noqa: E402

from synthratio.runtime import write_atomically  # noqa: E402

# The student study (2025) this project starts from: accuracy per R (%), Stable Diffusion on Kermany CNV.
STUDY_ACCURACY = {10: 0.8625, 20: 0.8562, 30: 0.8750, 40: 0.8750, 50: 0.9000, 60: 0.8438, 70: 0.8187, 80: 0.7750, 90: 0.6813}
SWEEP_COLUMNS = ("accuracy", "f1", "precision", "recall", "auroc", "log_loss", "ece")
LOG_LOSS_EPS = np.finfo(np.float64).eps  # probabilities clipped as sklearn's log_loss does


@dataclass(frozen=True)
class Regime:
    """The test predictions of one real-data regime: probs[R] is (seeds, scans, classes), seeds in the same
    order at every R (seed s at R is paired with seed s at R=0: same init and, when keep < 100, same real subset)."""

    keep: int  # % of the real synthetic-class training patients kept
    labels: np.ndarray  # (scans,) true classes of the real test scans
    probs: dict[int, np.ndarray]


def r_max(mean_accuracy: dict[int, float], tolerance: float) -> int:
    """Largest R whose mean accuracy stays within `tolerance` of R=0's (0 when every R>0 costs accuracy)."""
    floor = mean_accuracy[0] - tolerance
    return max(ratio for ratio, accuracy in mean_accuracy.items() if accuracy >= floor - 1e-12)


def per_scan(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hits, losses) of (seeds, scans, classes) probabilities: 0/1 correctness and -log p(true class)."""
    true = np.take_along_axis(probs, labels[None, :, None], axis=2)[..., 0]
    return (probs.argmax(axis=2) == labels).astype(float), -np.log(np.clip(true, LOG_LOSS_EPS, 1.0))


def bootstrap_means(values: dict[int, np.ndarray], resamples: int, seed: int) -> dict[int, np.ndarray]:
    """Mean over seeds and scans of `values[R]` (seeds, scans) on `resamples` draws that resample the test
    scans and the seeds with replacement (Efron & Tibshirani 1993, ch. 6). Every R uses the same scans and
    seeds in a draw, so differences between ratios are paired."""
    n_seeds, n_scans = next(iter(values.values())).shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(resamples, n_seeds, 1))
    scans = rng.integers(0, n_scans, size=(resamples, 1, n_scans))
    return {ratio: v[seeds, scans].mean(axis=(1, 2)) for ratio, v in values.items()}


def mcnemar_p(hits: np.ndarray, reference: np.ndarray) -> float:
    """Two-sided exact McNemar test (binomial on the discordant pairs; McNemar 1947) of 0/1 hits (seeds, scans)
    against the reference run of the same seed on the same scans, pooled over seeds. Pooling treats the
    seeds' pairs as independent, which they are not quite (same scans): read p as a screen, the bootstrap
    interval of the difference as the evidence."""
    better = int(((hits == 1) & (reference == 0)).sum())
    worse = int(((hits == 0) & (reference == 1)).sum())
    return 1.0 if better + worse == 0 else float(binomtest(better, better + worse, 0.5).pvalue)


def _interval(draws: np.ndarray, alpha: float) -> tuple[float, float]:
    return round(float(np.quantile(draws, alpha)), 6), round(float(np.quantile(draws, 1 - alpha)), 6)


def summarize_regime(runs: pd.DataFrame, regime: Regime, tolerance: float, confidence: float, resamples: int, seed: int = 0) -> dict:
    """One regime: per R the mean over seeds of every metric (`runs`: one row per ratio and seed), bootstrap
    intervals of accuracy and log-loss, the paired accuracy difference to R=0 with its interval and McNemar
    p-value; then R_max with its bootstrap interval, the best R and accuracy at R=100."""
    alpha = (1 - confidence) / 2
    scores = {ratio: per_scan(probs, regime.labels) for ratio, probs in regime.probs.items()}
    hits = {ratio: h for ratio, (h, _) in scores.items()}
    accuracy = bootstrap_means(hits, resamples, seed)
    loss = bootstrap_means({ratio: l for ratio, (_, l) in scores.items()}, resamples, seed)  # same draws
    means = runs.groupby("ratio")[list(SWEEP_COLUMNS)].mean()
    per_ratio: dict[str, dict[str, float]] = {}
    for ratio, row in means.iterrows():
        entry = {name: round(float(row[name]), 6) for name in SWEEP_COLUMNS}
        entry["accuracy_ci_low"], entry["accuracy_ci_high"] = _interval(accuracy[ratio], alpha)
        entry["log_loss_ci_low"], entry["log_loss_ci_high"] = _interval(loss[ratio], alpha)
        entry["accuracy_delta"] = round(float(row["accuracy"] - means.loc[0, "accuracy"]), 6)
        entry["accuracy_delta_ci_low"], entry["accuracy_delta_ci_high"] = _interval(accuracy[ratio] - accuracy[0], alpha)
        entry["accuracy_delta_p"] = float(f"{mcnemar_p(hits[ratio], hits[0]):.4g}")  # significant digits: a tiny p is not 0
        entry["seeds"] = int((runs["ratio"] == ratio).sum())
        per_ratio[str(ratio)] = entry
    mean_accuracy = {int(r): float(a) for r, a in means["accuracy"].items()}
    r_max_draws = np.array([r_max({r: float(b[i]) for r, b in accuracy.items()}, tolerance) for i in range(resamples)])
    return {
        "keep": regime.keep,
        "r_max": r_max(mean_accuracy, tolerance),
        "r_max_ci_low": int(np.quantile(r_max_draws, alpha, method="lower")),
        "r_max_ci_high": int(np.quantile(r_max_draws, 1 - alpha, method="higher")),
        "best_ratio": int(max(mean_accuracy, key=lambda r: (mean_accuracy[r], -r))),
        "baseline_accuracy": round(mean_accuracy[0], 6),
        "accuracy_at_100": round(mean_accuracy[100], 6) if 100 in mean_accuracy else None,
        "n_test": int(len(regime.labels)),
        "ratios": per_ratio,
    }


def summarize(
    runs: pd.DataFrame, regimes: Sequence[Regime], tolerance: float, confidence: float, resamples: int, mode: str = "replace", seed: int = 0
) -> dict:
    """summary.json: every regime's block under `regimes` (keyed by keep), and flat headline keys for `dvc exp
    show`: r_max (with interval), best_ratio, accuracy_at_100 and acc_r<R> of the full-data regime (the
    largest keep), `keep<K>_r_max` and `keep<K>_acc_r<R>` of the others."""
    if not regimes:
        raise ValueError("summarize needs at least one regime")
    blocks = {r.keep: summarize_regime(runs[runs["keep"] == r.keep], r, tolerance, confidence, resamples, seed) for r in regimes}
    headline = max(blocks)
    flat: dict = {"mode": mode, "tolerance": tolerance, "confidence": confidence, "headline_keep": headline}
    for keep, block in sorted(blocks.items(), reverse=True):
        prefix = "" if keep == headline else f"keep{keep}_"
        keys = ("r_max", "r_max_ci_low", "r_max_ci_high", "best_ratio", "baseline_accuracy", "accuracy_at_100", "n_test")
        flat.update({prefix + key: block[key] for key in (keys if keep == headline else keys[:3])})
        flat.update({f"{prefix}acc_r{ratio}": entry["accuracy"] for ratio, entry in block["ratios"].items()})
    flat["regimes"] = {str(keep): block for keep, block in sorted(blocks.items(), reverse=True)}
    return flat


def save_ratio_plot(summary: dict, runs: pd.DataFrame, synthetic: dict, path: Path) -> None:
    """Accuracy (left) and log-loss (right, it does not saturate) vs R for every regime: mean over seeds with its
    bootstrap band and single seeds; the published study's curve, R=0's tolerance line and R_max of each
    regime; the synthetic scans' FID against its real-vs-real floor and the detector AUROC in the title."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for color, (keep, block) in zip(plt.rcParams["axes.prop_cycle"].by_key()["color"], summary["regimes"].items()):
        ratios = sorted(int(r) for r in block["ratios"])
        entries = [block["ratios"][str(r)] for r in ratios]
        seeds = runs[runs["keep"] == int(keep)]
        for ax, metric in ((left, "accuracy"), (right, "log_loss")):
            ax.fill_between(ratios, [e[f"{metric}_ci_low"] for e in entries], [e[f"{metric}_ci_high"] for e in entries], color=color, alpha=0.15)
            ax.plot(ratios, [e[metric] for e in entries], "o-", color=color,
                    label=f"{keep}% real CNV: mean, {summary['confidence']:.0%} band (scans x seeds)")
            ax.scatter(seeds["ratio"], seeds[metric], s=10, color=color, alpha=0.5, zorder=3)
        left.axhline(block["baseline_accuracy"] - summary["tolerance"], color=color, lw=0.8, ls=":")
        left.axvline(block["r_max"], color=color, lw=1, ls="--",
                     label=f"R_max {block['r_max']}% ({block['r_max_ci_low']}-{block['r_max_ci_high']}); dotted: R=0 - {summary['tolerance']}")
    left.plot(list(STUDY_ACCURACY), list(STUDY_ACCURACY.values()), "s--", color="tab:red", alpha=0.6, label="published study (SD on Kermany)")
    xlabel = f"R: synthetic share of CNV examples per batch (%), mix.mode={summary['mode']}"
    left.set(xlabel=xlabel, ylabel="test accuracy (real scans)", title="Accuracy vs synthetic ratio")
    right.set(xlabel=xlabel, ylabel="test log-loss (real scans)", title="Log-loss vs synthetic ratio (lower is better)")
    notes = []
    if "domain_fid" in synthetic:
        floor = synthetic.get("domain_fid_floor")
        notes.append(f"domain FID {synthetic['domain_fid']:.3g}" + (f" (real-vs-real floor {floor:.3g})" if floor is not None else ""))
    notes += [f"{name} {synthetic[key]:.3g}" for key, name in (("inception_fid", "Inception FID"), ("detector_auroc", "detector AUROC")) if key in synthetic]
    if notes:
        fig.suptitle("Synthetic scans: " + ", ".join(notes), fontsize=10)
    left.legend(fontsize=6.5, loc="lower left")
    right.legend(fontsize=6.5, loc="upper left")
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
    """A short markdown report: per regime the headline numbers and the per-R table."""
    lines = ["# Ratio sweep", "", f"mix.mode = {summary['mode']}; intervals: {summary['confidence']:.0%} bootstrap over test scans and seeds; "
             "p: exact McNemar test against R=0, same seeds and scans."]
    for keep, block in summary["regimes"].items():
        lines += [
            "",
            f"## {keep}% of the real CNV training patients",
            "",
            f"R_max = **{block['r_max']}%** ({summary['confidence']:.0%} CI {block['r_max_ci_low']}-{block['r_max_ci_high']}%), "
            f"tolerance {summary['tolerance']} below R=0 accuracy {block['baseline_accuracy']:.4f}; best R {block['best_ratio']}%"
            + (f"; accuracy at R=100 {block['accuracy_at_100']:.4f}" if block["accuracy_at_100"] is not None else "")
            + f"; {block['n_test']} real test scans.",
            "",
            "| R % | accuracy (CI) | delta vs R=0 (CI) | p | F1 | AUROC | log-loss (CI) | ECE | seeds |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for ratio, e in sorted(block["ratios"].items(), key=lambda item: int(item[0])):
            lines.append(
                f"| {ratio} | {e['accuracy']:.4f} ({e['accuracy_ci_low']:.4f}-{e['accuracy_ci_high']:.4f}) | "
                f"{e['accuracy_delta']:+.4f} ({e['accuracy_delta_ci_low']:+.4f}, {e['accuracy_delta_ci_high']:+.4f}) | {e['accuracy_delta_p']:.3g} | "
                f"{e['f1']:.4f} | {e['auroc']:.4f} | {e['log_loss']:.4f} ({e['log_loss_ci_low']:.4f}-{e['log_loss_ci_high']:.4f}) | "
                f"{e['ece']:.4f} | {e['seeds']} |"
            )
    if synthetic:
        lines += ["", "Synthetic scans: " + ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in sorted(synthetic.items()))]
    return "\n".join(lines) + "\n"


def sweep_table(runs: pd.DataFrame, columns: Sequence[str] = SWEEP_COLUMNS) -> pd.DataFrame:
    """plots/ratio_sweep.csv: one row per (keep, ratio, seed), for `dvc plots`."""
    return runs[["ratio", "seed", "keep", *columns]].sort_values(["keep", "ratio", "seed"], ascending=[False, True, True]).reset_index(drop=True)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
