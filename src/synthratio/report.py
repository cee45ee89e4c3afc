"""The sweep's answer: per family of comparisons, each candidate against its reference on the same real test
scans, with patient-level intervals, paired tests, the non-inferiority verdict and R_max (inference.py).

A family is what one R_max is decided on:
- replace and add modes: one family per regime keep, R = 25, 50, ... against R=0 of the same cohort;
- data mode: one family, x = the synthetic share of the class's training data (100 - keep), the cohort
  filled with synthetic scans against all real patients (R=0, keep 100); beside it, for reading only, the
  cohorts without the fill ("real only").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from synthratio.config import Params, ReportConfig
from synthratio.inference import (
    Draws,
    Runs,
    bootstrap,
    cluster_draws,
    fixed_sequence,
    holm,
    improvement,
    interval,
    non_inferiority,
    paired_permutation_p,
    point,
)
from synthratio.layout import classifier_live_path, classifier_metrics_path, generator_files, predictions_path, run_name
from synthratio.runtime import read_json

# The student study (2025) this project starts from: accuracy per R (%), Stable Diffusion on Kermany CNV.
STUDY_ACCURACY = {
    10: 0.8625,
    20: 0.8562,
    30: 0.8750,
    40: 0.8750,
    50: 0.9000,
    60: 0.8438,
    70: 0.8187,
    80: 0.7750,
    90: 0.6813,
}
# per-run test metrics, averaged over seeds
RUN_COLUMNS = ("accuracy", "f1", "precision", "recall", "auroc", "log_loss", "ece")
BAND_METRICS = ("accuracy", "log_loss")  # drawn with an interval
HEADLINE_KEYS = ("r_max", "r_max_shown", "stopped_at", "stop", "resolvable_margin", *BAND_METRICS, "lower")


@dataclass(frozen=True)
class Arm:
    """One training recipe under every seed: its test predictions and its per-seed metrics rows."""

    runs: Runs
    metrics: pd.DataFrame  # one row per seed: the classifier's metrics JSON (accuracy, ..., synthetic_share)


@dataclass(frozen=True)
class Family:
    """Candidates, keyed by x (R, or the synthetic data share), each compared with one reference arm."""

    name: str  # keep<k>, data or real_only
    reference: Arm
    candidates: dict[int, Arm]
    decides: bool  # whether an R_max is read off it (real_only is shown, not decided on)
    x_label: str


def load_arm(params: Params, *, ratio: int, keep: int, scans: list[str] | None) -> tuple[Arm, list[str]]:
    """Every seed's metrics and test probabilities of one (R, keep), and the test scans they scored; every
    run must have scored the same test scans in the same order (`scans`: those of the runs read before)."""
    probs = []
    for seed in params.sweep.seeds:
        path = predictions_path(params, ratio=ratio, seed=seed, keep=keep)
        predictions = pd.read_csv(path)
        if scans is not None and predictions["file"].tolist() != scans:
            raise ValueError(f"{path}: test scans differ from the other runs' (rerun the classifier stages)")
        scans = predictions["file"].tolist()
        probs.append(predictions[[f"prob_{name}" for name in params.prepare.classes]].to_numpy())
    runs = Runs(
        probs=np.stack(probs),
        labels=predictions["label"].to_numpy(),
        patients=predictions["patient"].to_numpy(),
        positive=params.prepare.classes.index(params.sweep.synthetic_classes[0]),  # two classes: AUROC of the first
    )
    return Arm(runs=runs, metrics=pd.DataFrame(read_json(classifier_metrics_path(params, ratio, keep)))), scans


def training_curves(params: Params) -> pd.DataFrame:
    """plots/training_curves.csv: every training curve of the sweep in one long table (run, metric, step,
    value), read from the dvclive folders params.yaml names: each generator's loss and learning rate, each
    classifier's train loss and validation loss and accuracy per epoch."""
    folders = {f"finetune keep {k}": generator_files(params, k).live for k in params.sweep.keep}
    folders.update(
        {
            f"{run_name(r, k)} seed {s}": classifier_live_path(params, ratio=r, seed=s, keep=k)
            for k in params.sweep.keep
            for r in params.sweep.all_ratios
            for s in params.sweep.seeds
        }
    )
    parts = []
    for run, folder in folders.items():
        for tsv in sorted((folder / "plots" / "metrics").glob("*.tsv")):  # the curves this run logged
            curve = pd.read_csv(tsv, sep="\t")
            parts.append(
                pd.DataFrame({"run": run, "metric": tsv.stem, "step": curve["step"], "value": curve[tsv.stem]})
            )
    return pd.concat(parts, ignore_index=True)


def families(
    mode: str,
    arms: dict[tuple[int, int], Arm],
    *,
    keeps: Sequence[int],
    ratios: Sequence[int],
    synthetic_classes: Sequence[str] = ("CNV",),
) -> list[Family]:
    """The families of a sweep: `arms[(ratio, keep)]` for every ratio (0 included) and regime."""
    named = "/".join(synthetic_classes)
    if mode != "data":
        label = f"R: synthetic share of the {named} examples in every batch (%)" + (
            ", on top of the real ones" if mode == "add" else ""
        )
        return [
            Family(f"keep{k}", arms[(0, k)], {r: arms[(r, k)] for r in ratios}, True, label)
            for k in sorted(keeps, reverse=True)
        ]
    cohorts = sorted((k for k in keeps if k < 100), reverse=True)
    label = f"synthetic share of the {named} training data (%): the cohort's left-out patients' scans replaced"
    return [
        Family("data", arms[(0, 100)], {100 - k: arms[(100, k)] for k in cohorts}, True, label),
        Family(
            "real_only",
            arms[(0, 100)],
            {100 - k: arms[(0, k)] for k in cohorts},
            False,
            "share of the CNV training patients left out, nothing in their place (%)",
        ),
    ]


def _compare(family: Family, config: ReportConfig, classes: Sequence[str] = ()) -> pd.DataFrame:
    """One row per x (the reference at x=0 first): metrics, intervals, improvement, verdict, p; with more
    than two `classes`, each class's recall and the interval of its paired change from the reference."""
    reference = family.reference.runs
    draws = cluster_draws(
        reference.patients,
        n_seeds=len(reference.probs),
        resamples=config.bootstrap,
        seed=config.seed,
        strata=reference.labels,
    )
    reference_draws = {m: bootstrap(reference, m, draws) for m in {*BAND_METRICS, config.metric}}
    # the same patient draws with every seed kept: the spread the test set alone leaves
    seeds_fixed = Draws(
        weights=draws.weights, seeds=np.broadcast_to(np.arange(draws.seeds.shape[1]), draws.seeds.shape)
    )
    reference_fixed = bootstrap(reference, config.metric, seeds_fixed)
    # a class's recall is the accuracy on its scans: the same draws, weighted to that class alone (the draws
    # are stratified by class, so every draw holds each class's patients)
    of_class = {
        (label, name): Draws(weights=draws.weights * (reference.labels == label), seeds=draws.seeds)
        for label, name in enumerate(classes if len(classes) > 2 else ())
    }
    reference_recalls = {key: bootstrap(reference, "accuracy", d) for key, d in of_class.items()}
    rows = []
    for x, arm in {0: family.reference, **family.candidates}.items():
        row: dict = {"family": family.name, "x": x, "seeds": len(arm.metrics), "margin": config.margin}
        row.update({name: float(arm.metrics[name].mean()) for name in RUN_COLUMNS})
        for column in ("synthetic_share", "real_scans_of_class", "synthetic_scans"):
            row[column] = float(arm.metrics[column].mean()) if column in arm.metrics else float("nan")
        arm_draws = {m: bootstrap(arm.runs, m, draws) if x else reference_draws[m] for m in reference_draws}
        for m in BAND_METRICS:
            row[f"{m}_low"], row[f"{m}_high"] = interval(arm_draws[m], config.confidence)
        hits = arm.runs.scores("accuracy")
        for (label, name), class_draws in of_class.items():
            row[f"recall_{name}"] = float(hits[:, arm.runs.labels == label].mean())
            if x:
                change = bootstrap(arm.runs, "accuracy", class_draws) - reference_recalls[(label, name)]
                row[f"recall_{name}_delta_low"], row[f"recall_{name}_delta_high"] = interval(change, config.confidence)
        if x:
            metric = config.metric
            delta = float(improvement(point(arm.runs, metric), point(reference, metric), metric))
            verdict = non_inferiority(
                delta,
                improvement(arm_draws[metric], reference_draws[metric], metric),
                margin=config.margin,
                confidence=config.confidence,
            )
            fixed = improvement(bootstrap(arm.runs, metric, seeds_fixed), reference_fixed, metric)
            row.update(
                delta=delta,
                delta_lower=verdict.lower,
                delta_upper=verdict.upper,
                half_width=verdict.half_width,
                test_half_width=max(delta - float(np.quantile(fixed, 1 - config.confidence)), 0.0),
                verdict=verdict.verdict,
                p=paired_permutation_p(arm.runs, reference, metric, permutations=config.permutations, seed=config.seed),
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _decision(family: Family, table: pd.DataFrame, config: ReportConfig) -> dict:
    """The family's headline: R_max and how it was reached, the resolvable margin, per-x figures."""
    candidates = table[table["x"] > 0]
    sequence = fixed_sequence(dict(zip(candidates["x"].astype(int), candidates["verdict"])))
    runs = family.reference.runs
    block = {
        "r_max": sequence.r_max,
        "r_max_shown": sequence.shown,
        "stopped_at": sequence.stopped_at,
        "stop": sequence.stop_verdict or "none",
        "resolvable_margin": round(float(candidates["half_width"].max()), 6),
        "test_set_margin": round(float(candidates["test_half_width"].max()), 6),
        "n_test": int(len(runs.labels)),
        "n_test_patients": int(len(np.unique(runs.patients))),
    }
    for name in BAND_METRICS:
        block[name] = {str(int(x)): round(v, 6) for x, v in zip(table["x"], table[name])}
    block["lower"] = {str(int(x)): round(v, 6) for x, v in zip(candidates["x"], candidates["delta_lower"])}
    return block


def summarize(
    all_families: Sequence[Family], config: ReportConfig, mode: str, classes: Sequence[str] = ()
) -> tuple[dict, pd.DataFrame]:
    """The summary (settings, then one block per deciding family) and the long table behind it
    (plots/ratio_summary.csv), with Holm-adjusted p-values over every comparison of every family; with more
    than two `classes` (label i = classes[i]), per-class recalls in the table."""
    if not all_families:
        raise ValueError("summarize needs at least one family")
    table = pd.concat([_compare(family, config, classes) for family in all_families], ignore_index=True)
    tested = table["x"] > 0
    table.loc[tested, "p_holm"] = holm(table.loc[tested, "p"].tolist())
    summary: dict = {
        "metric": config.metric,
        "margin": config.margin,
        "confidence": config.confidence,
        "mode": mode,
        "preset": config.preset,
    }
    for family in all_families:
        if family.decides:
            summary[family.name] = _decision(family, table[table["family"] == family.name], config)
    return summary, table


def headline(summary: dict) -> dict:
    """metrics/summary.json, what `dvc exp show` compares: the metric, margin and confidence the verdicts were
    reached at; per family R_max, how the sequence ended, the resolvable margin, and per R the mean accuracy
    and log-loss and the lower bound of the difference (the rest is in summary.detail.json)."""
    settings = {key: summary[key] for key in ("metric", "margin", "confidence")}
    return settings | {
        name: {key: block[key] for key in HEADLINE_KEYS} for name, block in summary.items() if isinstance(block, dict)
    }


def preset_warning(summary: dict) -> list[str]:
    """The line a run of a preset other than the recipe starts with, so its numbers are never quoted as the
    recipe's (summaries written before report.preset existed are the recipe's)."""
    if summary.get("preset", "recipe") == "recipe":
        return []
    return [
        f"SMOKE PRESET (report.preset={summary['preset']}, quickstart.sh): a smaller phantom and fewer generator "
        "steps and images than the recipe in params.yaml. It shows the pipeline working end to end in "
        "minutes; its numbers are not the recipe's answer."
    ]


def verdict_sentence(name: str, block: dict, *, metric: str, margin: float, confidence: float) -> str:
    """One line a reader can quote: what R_max is, or why there is none."""
    bound = f"one-sided {confidence:.0%} lower bound of the paired {metric} difference above -{margin:g}"
    if block["stop"] == "none":
        return f"{name}: R_max = {block['r_max']}%: every R tested is non-inferior to R=0 ({bound})."
    if block["stop"] == "inferior":
        return (
            f"{name}: R_max = {block['r_max']}%: R={block['stopped_at']}% is shown to cost more than {margin:g} "
            f"({bound} for every R up to {block['r_max']}%)."
        )
    return (
        f"{name}: R_max not determined at margin {margin:g}: R={block['stopped_at']}% is inconclusive. "
        f"These runs resolve margins of about {block['resolvable_margin']:.3f} or more; the test set alone, "
        f"seeds held fixed, {block['test_set_margin']:.3f} (more seeds narrow the difference). "
        f"Non-inferior up to R={block['r_max_shown']}%."
    )


def read_synthetic(params: Params) -> dict[int | str, dict]:
    """Each cohort's synthetic-scan figures (metrics/synthetic/keep_<k>.detail.json), largest cohort first, keyed
    by keep; with several synthetic classes one entry per cohort and class, keyed "<keep>, <CLASS>"."""
    figures: dict[int | str, dict] = {}
    for keep in sorted(params.sweep.keep, reverse=True):
        detail = read_json(generator_files(params, keep).synthetic_detail)
        if len(params.sweep.synthetic_classes) == 1:
            figures[keep] = detail
        else:
            figures.update({f"{keep}, {name}": detail[name] for name in params.sweep.synthetic_classes})
    return figures


def markdown_report(summary: dict, table: pd.DataFrame, synthetic: dict[int | str, dict]) -> str:
    """plots/report.md: the verdict per family, its table, and the synthetic scans of each cohort (and class),
    in the order of `synthetic` (read_synthetic's)."""
    metric, margin, confidence = summary["metric"], summary["margin"], summary["confidence"]
    lines = [
        "# Ratio sweep",
        "",
        *(text for line in preset_warning(summary) for text in (f"**{line}**", "")),
        f"mix.mode = {summary['mode']}; decided on {metric} at margin {margin:g}; intervals: {confidence:.0%} "
        "bootstrap over test patients crossed with seeds; p: patient-level sign-flip permutation test of the "
        "seed-averaged paired difference, Holm-adjusted over every comparison.",
    ]
    for name, part in table.groupby("family", sort=False):
        lines += ["", f"## {name}", ""]
        if name in summary:
            lines += [verdict_sentence(name, summary[name], metric=metric, margin=margin, confidence=confidence), ""]
        lines += [
            f"| x % | synthetic share | accuracy (CI) | log-loss (CI) | {metric} difference (one-sided bounds) "
            "| verdict | p (Holm) | F1 | AUROC | ECE |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in part.iterrows():
            tested = r["x"] > 0
            lines.append(
                f"| {int(r['x'])} | {r['synthetic_share']:.2f} | "
                f"{r['accuracy']:.4f} ({r['accuracy_low']:.4f}-{r['accuracy_high']:.4f}) | "
                f"{r['log_loss']:.4f} ({r['log_loss_low']:.4f}-{r['log_loss_high']:.4f}) | "
                + (
                    f"{r['delta']:+.4f} ({r['delta_lower']:+.4f}, {r['delta_upper']:+.4f}) | {r['verdict']} | "
                    f"{r['p']:.3g} ({r['p_holm']:.3g}) | "
                    if tested
                    else "reference | | | "
                )
                + f"{r['f1']:.4f} | {r['auroc']:.4f} | {r['ece']:.4f} |"
            )
        lines += recall_table(part, confidence)
    for keep, metrics in synthetic.items():
        lines += ["", f"## Synthetic scans of cohort keep {keep}", "", *synthetic_table(metrics)]
    return "\n".join(lines) + "\n"


def recall_table(part: pd.DataFrame, confidence: float) -> list[str]:
    """Each class's test recall per x, and its paired change from the reference with its interval (a table
    only where the sweep has more than two classes: with two, recall and F1 of the class are in the main one)."""
    names = [c.removeprefix("recall_") for c in part.columns if c.startswith("recall_") and "_delta_" not in c]
    if not names:
        return []
    lines = [
        "",
        f"Recall per class (mean over seeds; change from the reference with its {confidence:.0%} interval, "
        "test patients resampled):",
        "",
        "| x % | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for _, r in part.iterrows():
        cells = [
            f"{r[f'recall_{n}']:.3f}"
            + (
                f" ({r[f'recall_{n}'] - part.iloc[0][f'recall_{n}']:+.3f}; {r[f'recall_{n}_delta_low']:+.3f} to "
                f"{r[f'recall_{n}_delta_high']:+.3f})"
                if r["x"] > 0
                else ""
            )
            for n in names
        ]
        lines.append(f"| {int(r['x'])} | " + " | ".join(cells) + " |")
    return lines


def synthetic_table(metrics: dict) -> list[str]:
    """The synthetic-scan figures beside what a real scan of another patient scores, and what each catches."""
    rows = [
        (
            "domain FID",
            "domain_fid",
            "domain_fid_floor",
            "distribution shift; the floor is real vs real, other patients",
        ),
        ("recall", "domain_recall", "domain_recall_floor", "missing variety"),
        ("precision", "domain_precision", "domain_precision_floor", "implausible scans"),
        ("coverage", "domain_coverage", "domain_coverage_floor", "missing variety, robust to outliers"),
        (
            "memorized (features)",
            "memorized_share_features",
            "memorized_share_features_floor",
            "copies of training patients",
        ),
    ]
    lines = ["| figure | synthetic | real floor (sd over halvings) | catches |", "|---|---|---|---|"]
    for name, key, floor, meaning in rows:
        if key in metrics:
            spread = metrics.get(f"{floor}_sd")
            lines.append(
                f"| {name} | {metrics[key]:.4g} | {metrics[floor]:.4g}"
                + (f" ({spread:.2g})" if spread is not None else "")
                + f" | {meaning} |"
            )
    if "detector_auroc" in metrics:
        lines.append(
            f"| detector AUROC | {metrics['detector_auroc']:.3f} ({metrics['detector_auroc_ci_low']:.3f}-"
            f"{metrics['detector_auroc_ci_high']:.3f}) | 0.5 | a fingerprint a classifier can learn |"
        )
    return lines


def terminal_summary(summary: dict, synthetic: dict[int | str, dict], plots: str) -> str:
    """The few lines the quick start ends with: the verdict per regime, accuracy per R, the synthetic scans'
    figures beside their floors, and where the report and figures are."""
    metric, margin, confidence = summary["metric"], summary["margin"], summary["confidence"]
    lines = [
        *preset_warning(summary),
        f"R_max: largest R shown non-inferior to R=0 on {metric} at margin {margin:g} ({confidence:.0%} one-sided):",
    ]
    for name, block in summary.items():
        if isinstance(block, dict):
            lines.append("  " + verdict_sentence(name, block, metric=metric, margin=margin, confidence=confidence))
            lines.append(
                "    accuracy by R: "
                + ", ".join(f"R={x} {v:.3f}" for x, v in sorted(block["accuracy"].items(), key=lambda i: int(i[0])))
            )
    for keep, figures in synthetic.items():
        lines.append(
            f"  synthetic scans, cohort keep {keep}: domain FID {figures['domain_fid']:.3g} "
            f"(real floor {figures['domain_fid_floor']:.3g}), detector AUROC {figures['detector_auroc']:.2f} "
            f"({figures['detector_auroc_ci_low']:.2f}-{figures['detector_auroc_ci_high']:.2f}; "
            f"0.5 = indistinguishable), memorized {figures['memorized_share_features']:.2f} "
            f"(real {figures['memorized_share_features_floor']:.2f})"
        )
    lines.append(
        f"Report: {plots}/report.md; figures: {plots}/accuracy_vs_ratio.png, {plots}/samples_keep_*.png; "
        "every curve: dvc plots show (dvc_plots/index.html, works offline)"
    )
    return "\n".join(lines)
