"""Stage report: metrics/summary.json (per family: R_max as a non-inferiority decision, the margin the test
set resolves, per-R figures and lower bounds), plots/ratio_summary.csv for dvc plots, the figure and a
markdown report. Reads exactly the runs params.yaml lists."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from synthratio.config import Params, load_params, run_stage

if TYPE_CHECKING:
    from synthratio.report import Arm


def load_arm(params: Params, ratio: int, keep: int, scans: list[str] | None) -> tuple[Arm, list[str]]:
    """Every seed's metrics and test probabilities of one (R, keep), and the test scans they scored; every
    run must have scored the same test scans in the same order (`scans`: those of the runs read before)."""
    # imported here, not at the top: main() reads and checks params.yaml before the seconds of these imports
    import numpy as np
    import pandas as pd

    from synthratio.inference import Runs
    from synthratio.layout import classifier_metrics_path, predictions_path
    from synthratio.report import Arm

    probs = []
    for seed in params.sweep.seeds:
        path = predictions_path(params, ratio, seed, keep)
        predictions = pd.read_csv(path)
        if scans is not None and predictions["file"].tolist() != scans:
            raise ValueError(f"{path}: test scans differ from the other runs' (rerun the classifier stages)")
        scans = predictions["file"].tolist()
        probs.append(predictions[[f"prob_{name}" for name in params.prepare.classes]].to_numpy())
    runs = Runs(probs=np.stack(probs), labels=predictions["label"].to_numpy(), patients=predictions["patient"].to_numpy(),
                positive=params.prepare.classes.index(params.sweep.synthetic_class))
    metrics = pd.DataFrame(json.loads(classifier_metrics_path(params, ratio, keep).read_text()))
    return Arm(runs=runs, metrics=metrics), scans


def main() -> None:
    params = load_params()
    # imported once params.yaml is read and checked: pandas, scipy and matplotlib take seconds to import
    from synthratio.figures import save_ratio_plot
    from synthratio.layout import generator_files
    from synthratio.report import STUDY_ACCURACY, families, markdown_report, summarize
    from synthratio.runtime import setup, write_atomically, write_json

    setup(params.runtime)
    sweep, plots = params.sweep, params.paths.plots
    arms, scans = {}, None
    for keep in sweep.keep:
        for ratio in sweep.all_ratios:
            arms[(ratio, keep)], scans = load_arm(params, ratio, keep, scans)
    groups = families(params.mix.mode, arms, sweep.keep, sweep.ratios)
    summary, table = summarize(groups, params.report, params.mix.mode)
    synthetic = {keep: json.loads(generator_files(params, keep).synthetic_metrics.read_text()) for keep in sweep.keep}
    write_json(params.paths.metrics / "summary.json", summary)
    write_atomically(plots / "ratio_summary.csv", lambda tmp: table.round(6).to_csv(tmp, index=False))
    save_ratio_plot(summary, table, groups[0].x_label, plots / "accuracy_vs_ratio.png", STUDY_ACCURACY)
    write_atomically(plots / "report.md", lambda tmp: tmp.write_text(markdown_report(summary, table, synthetic)))


if __name__ == "__main__":
    run_stage(main)
