"""Stage report: metrics/summary.json (per family: R_max as a non-inferiority decision at the declared margin
and level, its replication, per-R figures and lower bounds), plots/ratio_summary.csv for dvc plots, the
figure and a markdown report. Reads exactly the runs params.yaml lists."""

from synthratio.config import load_params
from synthratio.runtime import run_stage


def main() -> str:
    params = load_params()
    # imported once params.yaml is read and checked: pandas, scipy and matplotlib take seconds to import
    from synthratio.figures import save_ratio_plot
    from synthratio.layout import detail_path
    from synthratio.report import (
        STUDY_ACCURACY,
        attach_generator_figures,
        families,
        generator_figures,
        headline,
        load_arm,
        markdown_report,
        read_synthetic,
        summarize,
        training_curves,
    )
    from synthratio.runtime import setup_logging, write_atomically, write_json

    setup_logging()  # no torch: the report reads predictions
    sweep, plots = params.sweep, params.paths.plots
    arms, scans = {}, None
    for keep in sweep.keep:
        for ratio in sweep.all_ratios:
            arms[(ratio, keep)], scans = load_arm(params, ratio=ratio, keep=keep, scans=scans)
    groups = families(
        params.mix.mode, arms, keeps=sweep.keep, ratios=sweep.ratios, synthetic_classes=sweep.synthetic_classes
    )
    summary, table = summarize(groups, params.report, params.mix.mode, params.prepare.classes)
    summary = attach_generator_figures(summary, generator_figures(params))
    synthetic = read_synthetic(params)
    metrics = params.paths.metrics / "summary.json"
    write_json(detail_path(metrics), summary)
    write_json(metrics, headline(summary), sort_keys=False)  # dvc exp show's columns in HEADLINE_KEYS order
    write_atomically(plots / "ratio_summary.csv", lambda tmp: table.round(6).to_csv(tmp, index=False))
    generator_curves, classifier_curves = training_curves(params)  # x: optimizer steps, epochs
    write_atomically(plots / "generator_curves.csv", lambda tmp: generator_curves.round(6).to_csv(tmp, index=False))
    write_atomically(plots / "classifier_curves.csv", lambda tmp: classifier_curves.round(6).to_csv(tmp, index=False))
    save_ratio_plot(
        summary, table, x_label=groups[0].x_label, path=plots / "accuracy_vs_ratio.png", study=STUDY_ACCURACY
    )
    write_atomically(plots / "report.md", lambda tmp: tmp.write_text(markdown_report(summary, table, synthetic)))
    regimes = {name: block for name, block in summary.items() if isinstance(block, dict)}
    return "R_max " + ", ".join(
        f"{name} {'not determined' if block['r_max'] is None else str(block['r_max']) + '%'} (stop: {block['stop']})"
        for name, block in regimes.items()
    )


if __name__ == "__main__":
    run_stage(main)
