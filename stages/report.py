"""Stage report: summary.json (per-R means, intervals, R_max), the sweep table for dvc plots, the figure and a
markdown report. Reads exactly the runs params.yaml lists."""

import json

import numpy as np
import pandas as pd

from synthratio.classify.experiment import metrics_path, predictions_path
from synthratio.config import load_params
from synthratio.report import markdown_table, save_ratio_plot, summarize, sweep_table
from synthratio.runtime import setup, write_atomically, write_json


def main() -> None:
    params = load_params()
    setup(params.runtime)
    runs, correct = [], {}
    for ratio in params.sweep.all_ratios:
        hits = []
        for seed in params.sweep.seeds:
            runs.append(json.loads(metrics_path(params, ratio, seed).read_text()))
            predictions = pd.read_csv(predictions_path(params, ratio, seed))
            probabilities = predictions[[f"prob_{name}" for name in params.prepare.classes]].to_numpy()
            hits.append(probabilities.argmax(axis=1) == predictions["label"].to_numpy())
        correct[ratio] = np.array(hits, dtype=float)
    runs = pd.DataFrame(runs)
    report = params.report
    summary = summarize(runs, correct, report.tolerance, report.confidence, report.bootstrap)
    synthetic = json.loads((params.paths.metrics / "synthetic.json").read_text())
    plots = params.paths.plots
    write_json(params.paths.metrics / "summary.json", summary)
    write_atomically(plots / "ratio_sweep.csv", lambda tmp: sweep_table(runs).to_csv(tmp, index=False))
    save_ratio_plot(summary, runs, synthetic, plots / "accuracy_vs_ratio.png")
    write_atomically(plots / "report.md", lambda tmp: tmp.write_text(markdown_table(summary, synthetic)))


if __name__ == "__main__":
    main()
