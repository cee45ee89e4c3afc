"""The agenda study's findings (scripts/agenda_study.sh) from `dvc exp show --json`: tables, CSV and a figure.

    python scripts/agenda_findings.py                        # runs `dvc exp show --json -A`, writes docs/agenda/
    python scripts/agenda_findings.py --input shown.json     # a saved copy

Every experiment trains one generator per seed of its sweep.generator_seeds (the list comes from its params,
not from the files its commit happens to hold, where an older run's may linger), and a variant's figures are
the mean over its generators, with their range where the generators disagree most (detector AUROC, FID gap).

Generator variants (experiments `rank-<variant>`) are compared with `rank-default` on validation figures only:
the detector AUROC with its patient-bootstrap interval, the domain FID above its real-vs-real floor (in units
of the floor's sd over patient-disjoint halvings), precision/recall and the memorized share beside their
floors (descriptive), and evaluate_synthetic's data-copying test (copying_p_features, per generator). Ratio
sweeps (`sweep-<variant>`) add the test accuracy at R=0, the paired difference at R=100 with its one-sided
bounds at the report's level (report.alpha split over the regimes), its power, R_max, and how many generators
and classifier seeds they rest on.

A variant is called better or worse on a figure only when the evidence separates its generator mean from the
default's twice over: past the evaluation's noise (detector intervals, averaged over the generators, that do
not overlap; FID gaps more than two floor sds apart) and past the generators' spread (Welch's t-test over the
generators' values, p < SPREAD_P; with one generator on a side there is no spread to test, and the verdict
says so). A variant copies when any of its generators' copying p lies below MEMORIZED_P / its number of
generators (Bonferroni over them). Everything else is "not separated", which is what "did not matter" means
here at this sample size.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ttest_ind

from synthratio.layout import cohort_name
from synthratio.report import recall_table

sys.path.insert(0, str(Path(__file__).parent))
from rank_experiments import _params, exp_show, flatten  # noqa: E402

KEEP = 100  # the study's one cohort: every real CNV training patient
FAMILY = f"keep{KEEP}"  # its family in the report's summary and ratio summary
RATIOS = "plots/ratio_summary.csv"
SUMMARY = "metrics/summary.detail.json"  # each regime's share of alpha is in the detail, not the headline
DEFAULT = "default"
FID_SEPARATION = 2.0  # floor sds the generator means' FID gaps must move by to count
SPREAD_P = 0.05  # Welch's t-test over the generators' values: a difference their spread explains does not count
MEMORIZED_P = 0.05  # copying test level, Bonferroni-split over a variant's generators: below it, the variant copies
# settings that change what the figures are measured in (feature space, detector, real scans compared)
INCOMPARABLE = ("prepare.", "finetune.image_size", "finetune.target_class", "classifier.image_size", "evaluate.")


def synthetic_path(generator: int) -> str:
    """evaluate_synthetic@100-<generator>'s figures in an experiment commit."""
    return f"metrics/synthetic/{cohort_name(KEEP, generator)}.detail.json"


def samples_path(generator: int) -> str:
    """generate@100-<generator>'s grid of real (top rows) and synthetic scans."""
    return f"plots/samples_{cohort_name(KEEP, generator)}.png"


@dataclass(frozen=True)
class Generator:
    """One generator's validation figures (of one synthetic class, with several)."""

    seed: int  # its sweep.generator_seeds entry
    auroc: float
    auroc_low: float
    auroc_high: float
    fid_gap: float  # domain FID - floor
    fid_floor_sd: float
    precision: float
    precision_floor: float
    recall: float
    recall_floor: float
    memorized: float  # share of synthetic scans nearer a training scan than the threshold: descriptive
    memorized_floor: float
    copying_p: float  # data-copying test in domain features: small = nearer the training scans than unseen real ones
    rejected: int = 0  # synthetic scans curation left out (the figures are of the kept ones)
    kept: int = 0


@dataclass(frozen=True)
class Sweep:
    """A sweep's test figures of cohort keep 100 at R=0 and R=100, as its report gives them."""

    generators_100: int  # the models behind R=100: generator seeds x classifier seeds
    seeds_100: int
    accuracy_0: float
    f1_0: float  # positive class's F1 with two classes, macro F1 with more
    f1_100: float
    delta_100: float
    lower_100: float  # one-sided bounds of the paired difference at level alpha
    upper_100: float
    alpha: float | None  # the family's one-sided level: report.alpha split over the regimes' sequences
    verdict_100: str
    power_100: float  # of showing a costless R=100 non-inferior at the margin, at this replication
    r_max: float | None


@dataclass(frozen=True)
class Finding:
    variant: str
    phase: str  # rank | sweep
    rev: str
    changed: str  # the params this variant sets differently from the default
    comparable: bool  # measured like the default: no setting of INCOMPARABLE changed
    generators: tuple[Generator, ...]  # in sweep.generator_seeds order
    sweep: Sweep | None = None  # sweeps with an R=100 row only

    def values(self, figure: str) -> list[float]:
        return [getattr(g, figure) for g in self.generators]

    def mean(self, figure: str) -> float:
        return float(np.mean(self.values(figure)))

    @property
    def copies(self) -> bool:
        """Any generator copies at MEMORIZED_P, Bonferroni-split over the generators."""
        return min(self.values("copying_p")) < MEMORIZED_P / len(self.generators)


class LeftOut(Exception):
    """Why an experiment's figures cannot be read (the tables leave it out and say so)."""


def git_file(rev: str, path: str) -> bytes | None:
    """A file as the experiment commit `rev` holds it (None when it holds none)."""
    done = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True)
    return done.stdout if done.returncode == 0 else None


def experiments(shown: list[dict]) -> list[tuple[str, str, dict]]:
    """(name, rev, params) of every finished rank-/sweep- experiment, under every baseline commit shown."""
    found = []
    for baseline in shown:
        for exp_range in baseline.get("experiments") or []:
            state = (exp_range.get("executor") or {}).get("state") or "success"
            name = exp_range.get("name") or ""
            if state == "success" and name.startswith(("rank-", "sweep-")):
                exp = exp_range["revs"][0]
                found.append((name, exp["rev"], _params(exp.get("data"))))
    return found


def current_params(path: Path = Path("params.yaml")) -> dict:
    """params.yaml's values, dotted: a key added after the reference ran has this value there."""
    import yaml

    return flatten(yaml.safe_load(path.read_text())) if path.is_file() else {}


def reference_params(name: str, defaults: dict[str, dict], current: dict) -> dict:
    """What an experiment's `changed` is measured from: its phase's default run, else the other phase's (both
    run the same preset), else params.yaml itself (the preset's settings then count as changed too)."""
    phase = name.partition("-")[0]
    return defaults.get(phase) or next(iter(defaults.values()), None) or current


def generator_details(rev: str, params: dict) -> dict[int, dict]:
    """{generator seed: its metrics/synthetic detail} for every seed of the experiment's sweep.generator_seeds."""
    seeds = params.get("sweep.generator_seeds")
    if not seeds:
        raise LeftOut(
            "no sweep.generator_seeds in its params: it ran before generators were replicated (one generator, "
            f"figures in metrics/synthetic/keep_{KEEP}.detail.json)"
        )
    details = {}
    for seed in seeds:
        text = git_file(rev, synthetic_path(seed))
        if text is None:
            raise LeftOut(f"its commit holds no {synthetic_path(seed)} (sweep.generator_seeds={seeds})")
        details[seed] = json.loads(text)
    return details


def findings_of(name: str, rev: str, params: dict, default_params: dict, added: dict | None = None) -> list[Finding]:
    """One experiment's figures over its generators: one Finding, or with several synthetic classes one per
    class, named `<variant>:<CLASS>`. `added`: the values of keys the reference run does not have (params.yaml's
    own; a key that did not exist then is changed only where it differs from them). Raises LeftOut."""
    phase, _, variant = name.partition("-")
    per_block: dict[str, list[Generator]] = {}
    for seed, detail in generator_details(rev, params).items():
        if "detector_auroc" in detail:  # one synthetic class: its figures at the top level
            blocks = {variant: detail}
        else:
            blocks = {f"{variant}:{cls}": figures for cls, figures in detail.items() if isinstance(figures, dict)}
        for named, figures in blocks.items():
            per_block.setdefault(named, []).append(generator_of(seed, figures))
    added = added or {}
    changed = {k: v for k, v in sorted(params.items()) if default_params.get(k, added.get(k)) != v}
    described = ", ".join(f"{k}={json.dumps(v)}" for k, v in changed.items()) or "-"
    sweep = sweep_of(rev) if phase == "sweep" else None
    comparable = not any(k.startswith(INCOMPARABLE) for k in changed)
    return [
        Finding(named, phase, rev, described + _rejections(gens), comparable, tuple(gens), sweep)
        for named, gens in per_block.items()
    ]


def generator_of(seed: int, s: dict) -> Generator:
    """One generator's figures from its metrics/synthetic detail (one class's block, with several)."""
    return Generator(
        seed=seed,
        auroc=s["detector_auroc"],
        auroc_low=s["detector_auroc_ci_low"],
        auroc_high=s["detector_auroc_ci_high"],
        fid_gap=round(s["domain_fid"] - s["domain_fid_floor"], 6),
        fid_floor_sd=s["domain_fid_floor_sd"],
        precision=s["domain_precision"],
        precision_floor=s["domain_precision_floor"],
        recall=s["domain_recall"],
        recall_floor=s["domain_recall_floor"],
        memorized=s["memorized_share_features"],
        memorized_floor=s["memorized_share_features_floor"],
        copying_p=s["copying_p_features"],
        rejected=s.get("curation_rejected", 0),
        kept=s.get("curation_kept", 0),
    )


def _rejections(generators: list[Generator]) -> str:
    """How many synthetic scans curation rejected, per generator ("" when it rejected none)."""
    if not any(g.rejected for g in generators):
        return ""
    return " (rejected " + ", ".join(f"{g.rejected} of {g.rejected + g.kept}" for g in generators) + ")"


def sweep_of(rev: str) -> Sweep | None:
    """A sweep's R=0 and R=100 rows of its ratio summary and its family's summary (None without an R=100)."""
    text = git_file(rev, RATIOS)
    rows = (
        {row["x"]: row for row in csv.DictReader(io.StringIO(text.decode())) if row["family"] == FAMILY} if text else {}
    )
    base, full = rows.get("0"), rows.get("100")
    if not (base and full):
        return None
    block = json.loads(git_file(rev, SUMMARY) or b"{}").get(FAMILY, {})
    return Sweep(
        generators_100=int(full["generators"]),
        seeds_100=int(full["seeds"]),
        accuracy_0=float(base["accuracy"]),
        f1_0=float(base["f1"]),
        f1_100=float(full["f1"]),
        delta_100=float(full["delta"]),
        lower_100=float(full["delta_lower"]),
        upper_100=float(full["delta_upper"]),
        alpha=block.get("alpha"),
        verdict_100=full["verdict"],
        power_100=float(full["power"]),
        r_max=block.get("r_max"),
    )


def class_recall_table(variant: str, rev: str, confidence: float) -> str:
    """The sweep's per-class test recall at each R, with its paired change from R=0, as its own report gives it
    (plots/ratio_summary.csv's recall_<CLASS> columns; "" where the sweep has two classes)."""
    text = git_file(rev, RATIOS)
    table = pd.read_csv(io.BytesIO(text)) if text else pd.DataFrame(columns=["family"])
    lines = recall_table(table[table["family"] == FAMILY].reset_index(drop=True), confidence)
    return f"Per-class test recall of `{variant}`, cohort keep {KEEP}:\n" + "\n".join(lines) if lines else ""


def _beyond_spread(variant: Finding, default: Finding, figure: str) -> bool:
    """Whether the generators' spread leaves the difference of the two means standing (Welch's t-test); with one
    generator on a side there is no spread to test, and only the evaluation's noise is counted."""
    a, b = variant.values(figure), default.values(figure)
    return min(len(a), len(b)) < 2 or bool(ttest_ind(a, b, equal_var=False).pvalue < SPREAD_P)


def compare(variant: Finding, default: Finding) -> str:
    """Where the evidence separates a variant's generator means from the default's, figure by figure."""
    said = []
    if variant.mean("auroc_high") < default.mean("auroc_low") and _beyond_spread(variant, default, "auroc"):
        said.append("detector: better")
    elif variant.mean("auroc_low") > default.mean("auroc_high") and _beyond_spread(variant, default, "auroc"):
        said.append("detector: worse")
    gap_change = variant.mean("fid_gap") - default.mean("fid_gap")
    floor_sd = max(variant.values("fid_floor_sd") + default.values("fid_floor_sd"))
    if abs(gap_change) > FID_SEPARATION * floor_sd and _beyond_spread(variant, default, "fid_gap"):
        said.append(f"FID gap: {'better' if gap_change < 0 else 'worse'}")
    if variant.copies and not default.copies:
        said.append("memorizes more")
    elif default.copies and not variant.copies:
        said.append("memorizes less")
    if said and min(len(variant.generators), len(default.generators)) < 2:
        said.append("one generator on a side: the seed's spread is not counted")
    return "; ".join(said) or "not separated"


def rank_order(findings: list[Finding]) -> list[Finding]:
    """Best first. A copy of a training scan fools the detector (README: "Judging synthetic scans"), so
    variants that copy go last, whatever their AUROC."""
    return sorted(findings, key=lambda f: (f.copies, f.mean("auroc"), f.mean("fid_gap")))


def _spread(f: Finding, figure: str, digits: int) -> str:
    """The generators' range of a figure (nothing with one generator)."""
    values = f.values(figure)
    return f" [{min(values):.{digits}f} to {max(values):.{digits}f}]" if len(values) > 1 else ""


def rank_table(findings: list[Finding], default: Finding | None) -> str:
    lines = [
        "Means over each variant's generators, [their range]; detector: the generators' 95% CIs averaged; "
        f"copying: each generator's p, the variant copies below {MEMORIZED_P:g} / generators.",
        "",
        "| variant | changed | generators | detector AUROC (95% CI) [range] | FID - floor [range] (floor sd) "
        "| precision / floor | recall / floor | memorized / floor | copying p | vs default |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in rank_order(findings):
        if default is None or f.variant == DEFAULT:
            versus = "-"
        elif not f.comparable:
            versus = "not comparable (measured in another feature space or against other scans)"
        else:
            versus = compare(f, default)
        copying = ", ".join(f"{p:.2g}" for p in f.values("copying_p")) + (": copies" if f.copies else "")
        lines.append(
            f"| {f.variant} | {f.changed} | {len(f.generators)} "
            f"| {f.mean('auroc'):.3f} ({f.mean('auroc_low'):.3f}-{f.mean('auroc_high'):.3f}){_spread(f, 'auroc', 3)} "
            f"| {f.mean('fid_gap'):.2f}{_spread(f, 'fid_gap', 2)} ({max(f.values('fid_floor_sd')):.2f}) "
            f"| {f.mean('precision'):.2f} / {f.mean('precision_floor'):.2f} "
            f"| {f.mean('recall'):.2f} / {f.mean('recall_floor'):.2f} "
            f"| {f.mean('memorized'):.3f} / {f.mean('memorized_floor'):.3f} | {copying} | {versus} |"
        )
    return "\n".join(lines)


def sweep_table(findings: list[Finding]) -> str:
    lines = [
        "| variant | generators x seeds | R=0 accuracy | R=100 difference (one-sided bounds) | one-sided level "
        "| verdict at R=100 | power | R_max | F1 R=0 / R=100 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in sorted(findings, key=lambda f: -(f.sweep.delta_100 if f.sweep else -1)):
        s = f.sweep
        if s is None:
            lines.append(f"| {f.variant} | no ratio summary at R=100 | | | | | | | |")
            continue
        r_max = "not determined" if s.r_max is None else f"{s.r_max:g}%"
        level = "-" if s.alpha is None else f"{s.alpha:g}"
        lines.append(
            f"| {f.variant} | {s.generators_100} x {s.seeds_100} | {s.accuracy_0:.3f} "
            f"| {s.delta_100:+.3f} ({s.lower_100:+.3f}, {s.upper_100:+.3f}) | {level} | {s.verdict_100} "
            f"| {s.power_100:.2f} | {r_max} | {s.f1_0:.3f} / {s.f1_100:.3f} |"
        )
    return "\n".join(lines)


def csv_rows(findings: list[Finding]) -> tuple[list[str], list[dict]]:
    """findings.csv: one row per variant and generator, with the sweep's test figures repeated on each."""
    named = [f.name for f in fields(Finding) if f.name not in ("generators", "sweep")]
    figures = [f.name for f in fields(Generator) if f.name != "seed"]
    columns = [*named, "generator", *figures, *(f.name for f in fields(Sweep))]
    rows = [
        {name: getattr(f, name) for name in named}
        | {"generator": g.seed}
        | {name: getattr(g, name) for name in figures}
        | (vars(f.sweep) if f.sweep else {})
        for f in findings
        for g in f.generators
    ]
    return columns, rows


def save_figure(findings: list[Finding], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(findings, key=lambda f: f.mean("auroc"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.35 * len(ordered) + 1.5), sharey=True)
    y = np.arange(len(ordered))
    each = [(row, f) for row, f in zip(y, ordered) for _ in f.generators]  # one dot per generator
    auroc, low, high = ([f.mean(figure) for f in ordered] for figure in ("auroc", "auroc_low", "auroc_high"))
    left.errorbar(auroc, y, xerr=[np.subtract(auroc, low), np.subtract(high, auroc)], fmt="o", capsize=3)
    left.scatter([v for f in ordered for v in f.values("auroc")], [row for row, _ in each], marker="|", color="k")
    left.axvline(0.5, color="grey", ls=":")
    left.axvline(0.75, color="red", ls="--", lw=0.8)
    left.set(yticks=list(y), yticklabels=[f.variant for f in ordered], xlabel="detector AUROC (0.5: indistinguishable)")
    right.errorbar(
        [f.mean("fid_gap") for f in ordered],
        y,
        xerr=[max(f.values("fid_floor_sd")) for f in ordered],
        fmt="s",
        capsize=3,
    )
    right.scatter([v for f in ordered for v in f.values("fid_gap")], [row for row, _ in each], marker="|", color="k")
    right.axvline(0, color="grey", ls=":")
    right.set(xlabel="domain FID - real-vs-real floor (bar: floor sd)")
    fig.suptitle(
        "Generator variants on the Kermany sample's validation split (32 px detector): "
        "mean over generators, ticks: each generator"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, help="a saved `dvc exp show --json -A` instead of running it")
    parser.add_argument("--out", type=Path, default=Path("docs/agenda"), help="folder for findings.md/.csv/.png")
    args = parser.parse_args(argv)
    shown = json.loads(args.input.read_text()) if args.input else exp_show(all_commits=True)
    found = experiments(shown)
    defaults = {name.partition("-")[0]: params for name, _, params in found if name.endswith(f"-{DEFAULT}")}
    added = current_params()
    findings, left_out = [], []
    for name, rev, params in found:
        try:
            findings += findings_of(name, rev, params, reference_params(name, defaults, added), added)
        except LeftOut as why:
            left_out.append(f"`{name}` ({rev[:7]}): {why}")
    for line in left_out:
        print(f"left out {line}", file=sys.stderr)
    if not findings:
        raise SystemExit("no finished rank-/sweep- experiment with figures to read: run scripts/agenda_study.sh first")
    ranked = [f for f in findings if f.phase == "rank"]
    swept = [f for f in findings if f.phase == "sweep"]
    default = next((f for f in ranked if f.variant == DEFAULT), None)
    text = "\n\n".join(
        [
            "## Generator variants, validation split (copying ones last, then best detector AUROC first)",
            rank_table(ranked, default),
            "## Ratio sweeps, test split",
            sweep_table(swept),
            "## The sweeps' synthetic figures (validation split)",
            rank_table(swept, next((f for f in swept if f.variant == DEFAULT), None)),
        ]
    )
    confidence = {rev: params.get("report.confidence", added.get("report.confidence")) for _, rev, params in found}
    for f in {f.rev: f for f in swept}.values():  # more classes: where synthetic scans of scarce ones lift recall
        if recalls := class_recall_table(f.variant.partition(":")[0], f.rev, confidence[f.rev]):
            text += "\n\n" + recalls
    best = rank_order(ranked)[0] if ranked else None
    if best:
        text += (
            f"\n\nsamples_best.png: real (top rows) and synthetic scans of the best-ranked variant, `{best.variant}`, "
            f"generator seed {best.generators[0].seed}."
        )
    if left_out:
        text += "\n\n## Left out\n\n" + "\n".join(f"- {line}" for line in left_out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "findings.md").write_text(text + "\n")
    columns, rows = csv_rows(findings)
    with open(args.out / "findings.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    if ranked:
        save_figure(ranked, args.out / "validation.png")
        # real (top rows) beside synthetic scans of the default and of the best-ranked variant, first generator
        for role, f in (("default", default), ("best", best)):
            if f and (grid := git_file(f.rev, samples_path(f.generators[0].seed))):
                (args.out / f"samples_{role}.png").write_bytes(grid)
    print(text)


if __name__ == "__main__":
    main()
