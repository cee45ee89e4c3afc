"""The sweep's answer: per family of comparisons, each candidate recipe against its reference on the same
real test scans, with bounds that count test patients, classifier seeds and generator seeds, the
non-inferiority verdict and R_max (inference.py).

A family is what one R_max is decided on:
- replace and add modes: one family per regime keep, R = 25, 50, ... against R=0 of the same cohort;
- data mode: one family, x = the realised synthetic share of the class's training scans, the cohort filled
  with synthetic scans against all real patients (R=0, keep 100); beside it, for reading only, the cohorts
  without the fill ("real only").
The regimes' sequences share report.alpha equally; a candidate is every generator seed crossed with every
classifier seed, the reference (real only) every classifier seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from synthratio.config import Params, ReportConfig
from synthratio.inference import (
    Draws,
    Runs,
    cluster_draws,
    estimate,
    fixed_sequence,
    holm,
    non_inferiority,
    sequence_alpha,
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
# per regime in metrics/summary.json, the only DVC metric, in this order (dvc exp show's columns): the verdict,
# the paired difference and its lower bound at the largest x, the generators' figures; the rest is in the detail
GENERATOR_KEYS = ("fid_gap", "det_auroc")  # a family's generators' means (attach_generator_figures)
HEADLINE_KEYS = ("r_max", "stop", "delta", "lower", *GENERATOR_KEYS)
UNDETERMINED = "undetermined"  # R_max when the sequence stopped inconclusive (DVC drops a null from every view)
# a verdict about the recipe, at the size the calibration tests and the study preset use
STUDY_SEEDS, STUDY_GENERATORS = 5, 3


@dataclass(frozen=True)
class Arm:
    """One training recipe under every seed (and generator): its test predictions and its per-model metrics."""

    runs: Runs
    metrics: pd.DataFrame  # one row per model: the classifier's metrics JSON (accuracy, ..., synthetic_share)


@dataclass(frozen=True)
class Family:
    """Candidates, keyed by x (R, or the synthetic data share), each compared with one reference arm."""

    name: str  # keep<k>, data or real_only
    reference: Arm
    candidates: dict[int, Arm]
    decides: bool  # whether an R_max is read off it (real_only is shown, not decided on)
    x_label: str


def load_arm(params: Params, *, ratio: int, keep: int, scans: list[str] | None) -> tuple[Arm, list[str]]:
    """Every model's metrics and test probabilities of one (R, keep): each seed, and at R > 0 each seed of
    each generator; and the test scans they scored. Every run must have scored the same test scans in the
    same order (`scans`: those of the runs read before)."""
    generators = [None] if ratio == 0 else list(params.sweep.generator_seeds)
    probs, rows = [], []
    for generator in generators:
        for seed in params.sweep.seeds:
            path = predictions_path(params, ratio=ratio, seed=seed, keep=keep, generator=generator)
            predictions = pd.read_csv(path)
            if scans is not None and predictions["file"].tolist() != scans:
                raise ValueError(f"{path}: test scans differ from the other runs' (rerun the classifier stages)")
            scans = predictions["file"].tolist()
            probs.append(predictions[[f"prob_{name}" for name in params.prepare.classes]].to_numpy())
        rows += read_json(classifier_metrics_path(params, ratio, keep, generator))
    runs = Runs(
        probs=np.stack(probs),
        labels=predictions["label"].to_numpy(),
        patients=predictions["patient"].to_numpy(),
        positive=params.prepare.classes.index(params.sweep.synthetic_classes[0]),  # two classes: AUROC of the first
        generators=None if ratio == 0 else np.repeat(generators, len(params.sweep.seeds)),
    )
    return Arm(runs=runs, metrics=pd.DataFrame(rows)), scans


def training_curves(params: Params) -> tuple[pd.DataFrame, pd.DataFrame]:
    """plots/generator_curves.csv and plots/classifier_curves.csv: every training curve of the sweep, read
    from the dvclive folders params.yaml names, as two long tables (their x axes differ: optimizer steps,
    epochs). Generators (arm, run, metric, step, value): each generator's loss, its arm the regime keep<k>.
    Classifiers (arm, run, metric, epoch, value): each run's train loss and validation loss and accuracy per
    epoch, its arm the regime and R ("keep100 R=50", every generator and seed of it). Rows keep the sweep's
    order, regimes as in the summary (largest keep first), R ascending: the views colour arms in that order."""
    sweep = params.sweep
    keeps = sorted(sweep.keep, reverse=True)
    generators = {
        (f"keep{k}", f"keep{k} generator {g}"): generator_files(params, k, g).live
        for k in keeps
        for g in sweep.generator_seeds
    }
    classifiers = {
        (f"keep{k} R={r}", f"{run_name(r, k, g)} seed {s}"): classifier_live_path(
            params, ratio=r, seed=s, keep=k, generator=g
        )
        for k in keeps
        for r in sweep.all_ratios
        for g in ([None] if r == 0 else sweep.generator_seeds)
        for s in sweep.seeds
    }
    return _curves(generators, x="step"), _curves(classifiers, x="epoch")


def _curves(folders: dict[tuple[str, str], Path], x: str) -> pd.DataFrame:
    """One long table (arm, run, metric, x, value) of the curves each (arm, run)'s dvclive folder logged."""
    parts = []
    for (arm, run), folder in folders.items():
        for tsv in sorted((folder / "plots" / "metrics").glob("*.tsv")):  # the curves this run logged
            curve = pd.read_csv(tsv, sep="\t")
            parts.append(
                pd.DataFrame({"arm": arm, "run": run, "metric": tsv.stem, x: curve["step"], "value": curve[tsv.stem]})
            )
    if not parts:  # no run logged a curve: the table's columns, no rows
        return pd.DataFrame(columns=["arm", "run", "metric", x, "value"])
    table = pd.concat(parts, ignore_index=True)
    # A metric with one value at every step of every run (the learning rate under finetune.lr_schedule: constant)
    # draws a flat panel that says only what params.yaml says, and squeezes the panels that vary: left out.
    constant = table.groupby("metric")["value"].transform("nunique") == 1
    return table[~constant].reset_index(drop=True)


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
    label = f"synthetic share of the {named} training scans (%): the cohort's left-out patients' scans replaced"
    shares = {k: _realised_share(arms[(100, k)]) for k in cohorts}
    if 0 in shares.values() or len(set(shares.values())) < len(shares):
        raise ValueError(
            f"mix.mode data: the cohorts keep {list(shares)} put {list(shares.values())} % synthetic scans in their "
            "training data; each needs its own share above 0 (choose sweep.keep further apart)"
        )
    return [
        Family("data", arms[(0, 100)], {shares[k]: arms[(100, k)] for k in cohorts}, True, label),
        Family(
            "real_only",
            arms[(0, 100)],
            {100 - k: arms[(0, k)] for k in cohorts},
            False,
            "share of the CNV training patients left out, nothing in their place (%)",
        ),
    ]


def _realised_share(arm: Arm) -> int:
    """The percent of the synthetic classes' training scans that were synthetic in an arm's runs (data mode:
    set by how many scans the left-out patients had, not by their number)."""
    return int(round(100 * float(arm.metrics["synthetic_share"].mean())))


def _compare(family: Family, config: ReportConfig, alpha: float, classes: Sequence[str] = ()) -> pd.DataFrame:
    """One row per x (the reference at x=0 first): metrics with their intervals; for candidates the paired
    improvement, its bounds at one-sided `alpha` (the family's share of report.alpha), verdict, p-values and
    power, all from one variance-components model (inference.estimate); with more than two `classes`, each
    class's recall and the interval of its paired change from the reference."""
    reference = family.reference.runs
    # AUROC's test-set variance comes from a patient bootstrap; the per-scan metrics' is exact
    draws: Draws | None = None
    if config.metric == "auroc":
        draws = cluster_draws(
            reference.patients, n_seeds=1, resamples=config.bootstrap, seed=config.seed, strata=reference.labels
        )
    of_class = {name: reference.labels == label for label, name in enumerate(classes if len(classes) > 2 else ())}
    rows = []
    for x, arm in {0: family.reference, **family.candidates}.items():
        runs = arm.runs
        row: dict = {
            "family": family.name,
            "x": x,
            "generators": len(np.unique(runs.generator_groups)) if x else 0,
            "seeds": len(runs.probs) // len(np.unique(runs.generator_groups)),
            "margin": config.margin,
        }
        row.update({name: float(arm.metrics[name].mean()) for name in RUN_COLUMNS})
        for column in ("synthetic_share", "real_scans_of_class", "synthetic_scans"):
            row[column] = float(arm.metrics[column].mean()) if column in arm.metrics else float("nan")
        for m in BAND_METRICS:
            row[f"{m}_low"], row[f"{m}_high"] = estimate(runs, m).interval(config.confidence)
        hits = runs.scores("accuracy")
        for name, scans in of_class.items():
            row[f"recall_{name}"] = float(hits[:, scans].mean())
            if x:
                change = estimate(runs.subset(scans), "accuracy", reference=reference.subset(scans))
                row[f"recall_{name}_delta_low"], row[f"recall_{name}_delta_high"] = change.interval(config.confidence)
        if x:
            difference = estimate(runs, config.metric, reference=reference, draws=draws)
            verdict = non_inferiority(difference, margin=config.margin, alpha=alpha)
            row.update(
                delta=verdict.delta,
                delta_lower=verdict.lower,
                delta_upper=verdict.upper,
                se=verdict.se,
                df=verdict.df,
                **{f"variance_{name}": part.variance for name, part in difference.parts.items()},
                verdict=verdict.verdict,
                p=verdict.p,
                p_noninferior=verdict.p_noninferior,
                power=verdict.power,
                margin_at_power=verdict.margin_at_power,
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _decision(family: Family, table: pd.DataFrame, alpha: float) -> dict:
    """The family's headline: R_max and how it was reached, at what level and replication, the power at
    the declared margin, per-x figures."""
    candidates = table[table["x"] > 0].sort_values("x")
    sequence = fixed_sequence(dict(zip(candidates["x"].astype(int), candidates["verdict"])))
    runs = family.reference.runs
    # where the sequence stopped (or its last R): what a rerun of this size could show there
    last = candidates.set_index("x").loc[sequence.stopped_at or candidates["x"].iloc[-1]]
    block = {
        "r_max": sequence.r_max,
        "r_max_shown": sequence.shown,
        "stopped_at": sequence.stopped_at,
        "stop": sequence.stop_verdict or "none",
        "alpha": alpha,
        "generators": int(candidates["generators"].min()),
        "seeds": int(candidates["seeds"].min()),
        "power": round(float(last["power"]), 4),
        "margin_at_power": round(float(last["margin_at_power"]), 6),
        "n_test": int(len(runs.labels)),
        "n_test_patients": int(len(np.unique(runs.patients))),
    }
    for name in BAND_METRICS:
        block[name] = {str(int(x)): round(v, 6) for x, v in zip(table["x"], table[name])}
    block["delta"] = {str(int(x)): round(v, 6) for x, v in zip(candidates["x"], candidates["delta"])}
    block["lower"] = {str(int(x)): round(v, 6) for x, v in zip(candidates["x"], candidates["delta_lower"])}
    return block


def summarize(
    all_families: Sequence[Family], config: ReportConfig, mode: str, classes: Sequence[str] = ()
) -> tuple[dict, pd.DataFrame]:
    """The summary (settings, then one block per deciding family) and the long table behind it
    (plots/ratio_summary.csv), with Holm-adjusted p-values over every comparison of every family; each
    deciding family's sequence at report.alpha split over them; with more than two `classes` (label i =
    classes[i]), per-class recalls in the table."""
    if not all_families:
        raise ValueError("summarize needs at least one family")
    alpha = sequence_alpha(config.alpha, sum(family.decides for family in all_families))
    table = pd.concat([_compare(family, config, alpha, classes) for family in all_families], ignore_index=True)
    tested = table["x"] > 0
    table.loc[tested, "p_holm"] = holm(table.loc[tested, "p"].tolist())
    summary: dict = {
        "metric": config.metric,
        "margin": config.margin,
        "alpha": config.alpha,
        "confidence": config.confidence,
        "mode": mode,
        "preset": config.preset,
    }
    for family in all_families:
        if family.decides:
            summary[family.name] = _decision(family, table[table["family"] == family.name], alpha)
    return summary, table


def headline(summary: dict) -> dict:
    """metrics/summary.json, what `dvc exp show` compares, one block per deciding family in HEADLINE_KEYS
    order: R_max (a percent, or UNDETERMINED), how the sequence ended, the paired difference and its one-sided
    lower bound at the largest x tested, and the family's generators' mean domain FID above its real floor
    (fid_gap) and synthetic-vs-real detector AUROC (det_auroc), where attach_generator_figures added them.
    Regime keep<k> is k<k> here: twelve columns and the experiment's name fit a 200-column terminal. The rest
    is in summary.detail.json."""
    blocks = {}
    for name, block in summary.items():
        if not isinstance(block, dict):
            continue
        largest = str(max(int(x) for x in block["lower"]))
        figures = {
            "r_max": UNDETERMINED if block["r_max"] is None else block["r_max"],
            "stop": block["stop"],
            "delta": round(block["delta"][largest], 4),
            "lower": round(block["lower"][largest], 4),
        } | {key: block[key] for key in GENERATOR_KEYS if key in block}
        blocks[headline_name(name)] = figures
    return blocks


def headline_name(family: str) -> str:
    """A family's key in metrics/summary.json: keep<k> as k<k> (shorter columns), data as itself."""
    return family.replace("keep", "k", 1) if family.startswith("keep") else family


def generator_figures(params: Params) -> dict[int, dict[str, float]]:
    """Per regime keep, the mean over its generators (and, with several synthetic classes, over those classes) of
    the domain FID above its real floor and of the synthetic-vs-real detector AUROC, from
    metrics/synthetic/keep_<k>_gen_<g>.json, for the headline."""
    classes = params.sweep.synthetic_classes
    figures = {}
    for keep in params.sweep.keep:
        blocks = []
        for g in params.sweep.generator_seeds:
            written = read_json(generator_files(params, keep, g).synthetic_metrics)
            blocks += [written[c] for c in classes] if len(classes) > 1 else [written]  # several: keyed by class
        figures[keep] = {
            "fid_gap": float(np.mean([m["domain_fid"] - m["domain_fid_floor"] for m in blocks])),
            "det_auroc": float(np.mean([m["detector_auroc"] for m in blocks])),
        }
    return figures


def attach_generator_figures(summary: dict, figures: dict[int, dict[str, float]]) -> dict:
    """The summary with each deciding family's generator figures (generator_figures) in its block: a keep<k>
    family's own regime's; mix.mode data's, the mean over the cohorts whose generators it used (keep < 100)."""
    attached = dict(summary)
    for name, block in summary.items():
        if not isinstance(block, dict):
            continue
        keeps = [int(name.removeprefix("keep"))] if name.startswith("keep") else [k for k in figures if k < 100]
        attached[name] = block | {
            key: round(float(np.mean([figures[k][key] for k in keeps])), 3) for key in GENERATOR_KEYS
        }
    return attached


def preset_warning(summary: dict) -> list[str]:
    """The line a run of a preset other than the recipe starts with, so its numbers are never quoted as the
    recipe's (summaries written before report.preset existed are the recipe's)."""
    preset = summary.get("preset", "recipe")
    if preset == "recipe":
        return []
    if preset == "rehearsal":
        return [
            "REHEARSAL (report.preset=rehearsal, scripts/rehearse_sd15.sh): a pipeline with Stable Diffusion 1.5's "
            "shapes and random weights, a few steps and scans at 512 px. It shows that the study's method runs at "
            "its real size and what each stage costs; its numbers mean nothing."
        ]
    return [
        f"SMOKE PRESET (report.preset={preset}, quickstart.sh): a smaller phantom and fewer generator "
        "steps and images than the recipe in params.yaml. It shows the pipeline working end to end in "
        "minutes; its numbers are not the recipe's answer."
    ]


def replication_warning(summary: dict) -> list[str]:
    """The line a verdict below the study's replication starts with: one generator speaks for that generator
    alone (its seed-to-generator variance is unmeasured), and fewer seeds or generators than the study
    preset's leave the bounds few degrees of freedom."""
    blocks = [block for block in summary.values() if isinstance(block, dict) and "generators" in block]
    if not blocks:
        return []
    generators, seeds = min(b["generators"] for b in blocks), min(b["seeds"] for b in blocks)
    if generators >= STUDY_GENERATORS and seeds >= STUDY_SEEDS:
        return []
    about = (
        "the verdicts are about that one trained generator, not the recipe: no generator-to-generator variance "
        "is in the bounds, so they are NOT CALIBRATED for the recipe"
        if generators == 1
        else "the bounds count every source of variance but rest on few degrees of freedom: wide, with little power"
    )
    return [
        f"UNDER-REPLICATED: {generators} generator seed(s) and {seeds} classifier seeds (the study preset: "
        f"{STUDY_GENERATORS} and {STUDY_SEEDS}); {about}."
    ]


def verdict_sentence(name: str, block: dict, *, metric: str, margin: float) -> str:
    """One line a reader can quote: what R_max is, or why there is none, at the level it was tested at."""
    bound = f"one-sided {block['alpha']:.3g}-level lower bound of the paired {metric} difference above -{margin:g}"
    # the power at the declared margin, at the R where the sequence stopped (or its last R)
    size = f"{block['generators']} generator(s) x {block['seeds']} seeds, power {block['power']:.0%} at this margin"
    if block["stop"] == "none":
        return f"{name}: R_max = {block['r_max']}%: every R tested is non-inferior to R=0 ({bound}; {size})."
    if block["stop"] == "inferior":
        return (
            f"{name}: R_max = {block['r_max']}% ({bound} for every R up to it; {size}). R={block['stopped_at']}% "
            f"looks worse by more than {margin:g} (its upper bound is below -{margin:g}; descriptive, not a claim "
            "of the sequence)."
        )
    return (
        f"{name}: R_max not determined at margin {margin:g}: R={block['stopped_at']}% is inconclusive ({size}: "
        "the chance a rerun of this size shows a costless R non-inferior; more seeds and generators raise it). "
        f"Non-inferior up to R={block['r_max_shown']}%."
    )


def read_synthetic(params: Params) -> dict[str, dict]:
    """Each generator's synthetic-scan figures (metrics/synthetic/keep_<k>_gen_<g>.detail.json), largest cohort
    first, keyed "keep <k>, generator <g>"; with several synthetic classes one entry per class too, keyed
    "keep <k>, generator <g>, <CLASS>"."""
    figures: dict[str, dict] = {}
    for keep in sorted(params.sweep.keep, reverse=True):
        for generator in params.sweep.generator_seeds:
            name = f"keep {keep}, generator {generator}"
            detail = read_json(generator_files(params, keep, generator).synthetic_detail)
            if len(params.sweep.synthetic_classes) == 1:
                figures[name] = detail
            else:
                figures.update({f"{name}, {one}": detail[one] for one in params.sweep.synthetic_classes})
    return figures


def method_line(summary: dict) -> str:
    """How the verdicts were reached: the declared margin and level, and what the bounds count."""
    families = sum(isinstance(block, dict) for block in summary.values())
    patients = "a patient bootstrap" if summary["metric"] == "auroc" else "their cluster variance"
    return (
        f"mix.mode = {summary['mode']}; decided on {summary['metric']} at margin {summary['margin']:g} and one-sided "
        f"level {summary['alpha']:g}, both declared in params.yaml before the run; the level is split over "
        f"{families} regime(s) (Bonferroni), each tested as a fixed sequence of ascending x. Bounds and p-values: "
        f"one t model whose variance sums test patients ({patients}), classifier seeds and generator seeds, "
        "on Satterthwaite's degrees of freedom (inference.py); p (two-sided, no difference) Holm-adjusted over "
        f"every comparison; power: of showing a costless x non-inferior at the margin; intervals: "
        f"{summary['confidence']:.0%}, same model."
    )


def markdown_report(summary: dict, table: pd.DataFrame, synthetic: dict[str, dict]) -> str:
    """plots/report.md: the verdict per family, its table, and the synthetic scans of each generator (and
    class), in the order of `synthetic` (read_synthetic's)."""
    metric, margin, confidence = summary["metric"], summary["margin"], summary["confidence"]
    lines = [
        "# Ratio sweep",
        "",
        *(text for line in [*preset_warning(summary), *replication_warning(summary)] for text in (f"**{line}**", "")),
        method_line(summary),
    ]
    for name, part in table.groupby("family", sort=False):
        lines += ["", f"## {name}", ""]
        if name in summary:
            lines += [verdict_sentence(name, summary[name], metric=metric, margin=margin), ""]
        lines += [
            f"| x % | generators x seeds | synthetic share | accuracy (CI) | log-loss (CI) | {metric} difference "
            "(one-sided bounds) | verdict | p (Holm) | power | F1 | AUROC | ECE |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for _, r in part.iterrows():
            tested = r["x"] > 0
            lines.append(
                f"| {int(r['x'])} | {_models(r)} | {r['synthetic_share']:.2f} | "
                f"{r['accuracy']:.4f} ({r['accuracy_low']:.4f}-{r['accuracy_high']:.4f}) | "
                f"{r['log_loss']:.4f} ({r['log_loss_low']:.4f}-{r['log_loss_high']:.4f}) | "
                + (
                    f"{r['delta']:+.4f} ({r['delta_lower']:+.4f}, {r['delta_upper']:+.4f}) | {r['verdict']} | "
                    f"{r['p']:.3g} ({r['p_holm']:.3g}) | {r['power']:.2f} | "
                    if tested
                    else "reference | | | | "
                )
                + f"{r['f1']:.4f} | {r['auroc']:.4f} | {r['ece']:.4f} |"
            )
        lines += recall_table(part, confidence)
    for name, metrics in synthetic.items():
        lines += ["", f"## Synthetic scans, {name}", "", *synthetic_table(metrics)]
    return "\n".join(lines) + "\n"


def _models(row: pd.Series) -> str:
    """A table row's replication: generators x seeds, or the real-only reference's seeds."""
    if row["x"] > 0:
        return f"{int(row['generators'])} x {int(row['seeds'])}"
    return f"{int(row['seeds'])} seeds, real only"


def recall_table(part: pd.DataFrame, confidence: float) -> list[str]:
    """Each class's test recall per x, and its paired change from the reference with its interval (a table
    only where the sweep has more than two classes: with two, recall and F1 of the class are in the main one)."""
    names = [c.removeprefix("recall_") for c in part.columns if c.startswith("recall_") and "_delta_" not in c]
    if not names:
        return []
    lines = [
        "",
        f"Recall per class (mean over models; change from the reference with its {confidence:.0%} interval, "
        "test patients, seeds and generators counted):",
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
    lines = [
        "Floors and compared sets: one scan per held-out patient.",
        "",
        "| figure | synthetic | real floor (sd over halvings) | catches |",
        "|---|---|---|---|",
    ]
    for name, key, floor, meaning in rows:
        if key in metrics:
            spread = metrics.get(f"{floor}_sd")
            lines.append(
                f"| {name} | {metrics[key]:.4g} | {metrics[floor]:.4g}"
                + (f" ({spread:.2g})" if spread is not None else "")
                + f" | {meaning} |"
            )
    if "copying_p_features" in metrics:
        lines.append(
            f"| copying test (features) | P(closer than unseen real) {metrics['copying_auroc_features']:.3f}, "
            f"p {metrics['copying_p_features']:.3g} | 0.5 | copies: synthetic scans nearer training scans than "
            "other patients' are (Meehan et al. 2020, by patient) |"
        )
    if "detector_auroc" in metrics:
        lines.append(
            f"| detector AUROC | {metrics['detector_auroc']:.3f} ({metrics['detector_auroc_ci_low']:.3f}-"
            f"{metrics['detector_auroc_ci_high']:.3f}) | 0.5 | a fingerprint a classifier can learn |"
        )
    return lines


def terminal_summary(summary: dict, synthetic: dict[str, dict], plots: str) -> str:
    """The few lines the quick start ends with: the warnings a verdict carries, the verdict per regime,
    accuracy per R, each generator's scans beside their floors, and where the report and figures are."""
    metric, margin = summary["metric"], summary["margin"]
    lines = [
        *preset_warning(summary),
        *replication_warning(summary),
        f"R_max: largest R shown non-inferior to R=0 on {metric} at margin {margin:g}, one-sided level "
        f"{summary['alpha']:g} over every regime (declared in params.yaml):",
    ]
    for name, block in summary.items():
        if isinstance(block, dict):
            lines.append("  " + verdict_sentence(name, block, metric=metric, margin=margin))
            lines.append(
                "    accuracy by R: "
                + ", ".join(f"R={x} {v:.3f}" for x, v in sorted(block["accuracy"].items(), key=lambda i: int(i[0])))
            )
    for name, figures in synthetic.items():
        lines.append(
            f"  synthetic scans, {name}: domain FID {figures['domain_fid']:.3g} "
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
