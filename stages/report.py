"""Stage report: summary.json (per regime and R: means, intervals, paired tests, R_max), the sweep table for
dvc plots, the figure and a markdown report. Reads exactly the runs params.yaml lists."""

import json

import numpy as np
import pandas as pd

from synthratio.classify.experiment import metrics_path, predictions_path
from synthratio.config import Params, load_params
from synthratio.report import Regime, markdown_table, save_ratio_plot, summarize, sweep_table
from synthratio.runtime import setup, write_atomically, write_json


def load_regime(params: Params, keep: int) -> tuple[list[dict], Regime]:
    """Per-run metrics and stacked test probabilities of every (R, seed) of one regime; every run must have
    scored the same test scans in the same order."""
    runs, probs, files = [], {}, None
    for ratio in params.sweep.all_ratios:
        per_seed = []
        for seed in params.sweep.seeds:
            runs.append(json.loads(metrics_path(params, ratio, seed, keep).read_text()))
            path = predictions_path(params, ratio, seed, keep)
            predictions = pd.read_csv(path)
            if files is None:
                files, labels = predictions["file"].tolist(), predictions["label"].to_numpy()
            elif predictions["file"].tolist() != files:
                raise ValueError(f"{path}: test scans differ from the other runs' (rerun the classifier stages)")
            per_seed.append(predictions[[f"prob_{name}" for name in params.prepare.classes]].to_numpy())
        probs[ratio] = np.stack(per_seed)
    return runs, Regime(keep=keep, labels=labels, probs=probs)


def main() -> None:
    params = load_params()
    setup(params.runtime)
    runs, regimes = [], []
    for keep in params.sweep.keep:
        regime_runs, regime = load_regime(params, keep)
        runs += regime_runs
        regimes.append(regime)
    runs = pd.DataFrame(runs)
    report = params.report
    summary = summarize(runs, regimes, report.tolerance, report.confidence, report.bootstrap, params.mix.mode)
    synthetic_path = params.paths.metrics / "synthetic.json"
    synthetic = json.loads(synthetic_path.read_text()) if synthetic_path.is_file() else {}
    plots = params.paths.plots
    write_json(params.paths.metrics / "summary.json", summary)
    write_atomically(plots / "ratio_sweep.csv", lambda tmp: sweep_table(runs).to_csv(tmp, index=False))
    save_ratio_plot(summary, runs, synthetic, plots / "accuracy_vs_ratio.png")
    write_atomically(plots / "report.md", lambda tmp: tmp.write_text(markdown_table(summary, synthetic)))


if __name__ == "__main__":
    main()
