"""The agenda study's findings (scripts/agenda_study.sh) from `dvc exp show --json`: tables, CSV and a figure.

    python scripts/agenda_findings.py                        # runs `dvc exp show --json -A`, writes docs/agenda/
    python scripts/agenda_findings.py --input shown.json     # a saved copy

Generator variants (experiments `rank-<variant>`) are compared with `rank-default` on validation figures only:
the detector AUROC with its patient-bootstrap interval, the domain FID above its real-vs-real floor (in units
of the floor's sd over patient-disjoint halvings), precision/recall beside their floors, and the memorized
share tested against the real-vs-real floor (one-sided binomial). Ratio sweeps (`sweep-<variant>`) add the
test accuracy at R=0, the paired difference at R=100 with its one-sided bounds, and R_max. A variant is
called better or worse on a figure only when the evidence separates it from the default: detector intervals
that do not overlap, or an FID gap that moves by more than two floor sds; everything else is "not
separated", which is what "did not matter" means here at this sample size.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
from scipy.stats import binomtest

from synthratio.report import recall_table

sys.path.insert(0, str(Path(__file__).parent))
from rank_experiments import _params, exp_show, flatten  # noqa: E402

SYNTHETIC = "metrics/synthetic/keep_100.detail.json"
RATIOS = "plots/ratio_summary.csv"
SUMMARY = "metrics/summary.json"
SAMPLES = "plots/samples_keep_100.png"
DEFAULT = "default"
FID_SEPARATION = 2.0  # floor sds an FID gap must move by to count
# settings that change what the figures are measured in (feature space, detector, real scans compared)
INCOMPARABLE = ("prepare.", "finetune.image_size", "finetune.target_class", "classifier.image_size", "evaluate.")
MEMORIZED_P = 0.05  # memorized share above the real floor at this one-sided level: the variant copies
SEED_SUFFIX = re.compile(r"_seed(\d+)$")  # <variant>_seed<k>: the variant with finetune.seed=k (no suffix: 0)


@dataclass(frozen=True)
class Finding:
    variant: str
    phase: str  # rank | sweep
    rev: str
    changed: str  # the params this variant sets differently from the default
    comparable: bool  # measured like the default: no setting of INCOMPARABLE changed
    auroc: float
    auroc_low: float
    auroc_high: float
    fid_gap: float  # domain FID - floor
    fid_floor_sd: float
    precision: float
    precision_floor: float
    recall: float
    recall_floor: float
    memorized: float
    memorized_floor: float
    memorized_p: float  # one-sided binomial: synthetic share above the real-vs-real floor
    rejected: int = 0  # synthetic scans curation left out (the figures are of the kept ones)
    accuracy_0: float | None = None
    f1_0: float | None = None  # positive class's F1 with two classes, macro F1 with more
    f1_100: float | None = None
    delta_100: float | None = None
    lower_100: float | None = None  # one-sided 95% bounds (report.confidence) of the paired difference
    upper_100: float | None = None
    verdict_100: str | None = None
    r_max: float | None = None


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


def _ratio_rows(rev: str) -> dict[str, dict[str, str]]:
    """{R: row} of the full cohort in an experiment's ratio summary."""
    text = git_file(rev, RATIOS)
    rows = csv.DictReader(io.StringIO(text.decode())) if text else []
    return {row["x"]: row for row in rows if row["family"] == "keep100"}


def _number(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def current_params(path: Path = Path("params.yaml")) -> dict:
    """params.yaml's values, dotted: a key added after the reference ran has this value there."""
    import yaml

    return flatten(yaml.safe_load(path.read_text())) if path.is_file() else {}


def reference_params(name: str, defaults: dict[str, dict], current: dict) -> dict:
    """What an experiment's `changed` is measured from: its phase's default run, else the other phase's (both
    run the same preset), else params.yaml itself (the preset's settings then count as changed too)."""
    phase = name.partition("-")[0]
    return defaults.get(phase) or next(iter(defaults.values()), None) or current


def findings_of(name: str, rev: str, params: dict, default_params: dict, added: dict | None = None) -> list[Finding]:
    """One experiment's figures: one Finding, or with several synthetic classes one per class, named
    `<variant>:<CLASS>`. `added`: the values of keys the reference run does not have (params.yaml's own; a key
    that did not exist then is changed only where it differs from them)."""
    text = git_file(rev, SYNTHETIC)
    if text is None:
        return []
    detail = json.loads(text)
    phase, _, variant = name.partition("-")
    if "detector_auroc" in detail:  # one synthetic class: its figures at the top level
        blocks = {variant: detail}
    else:
        blocks = {f"{variant}:{cls}": figures for cls, figures in detail.items() if isinstance(figures, dict)}
    added = added or {}
    changed = {k: v for k, v in sorted(params.items()) if default_params.get(k, added.get(k)) != v}
    described = ", ".join(f"{k}={json.dumps(v)}" for k, v in changed.items()) or "-"
    sweep = _sweep_figures(rev) if phase == "sweep" else {}
    comparable = not any(k.startswith(INCOMPARABLE) for k in changed)
    return [_finding(named, phase, rev, described, comparable, s, sweep) for named, s in blocks.items()]


def _sweep_figures(rev: str) -> dict:
    """A sweep's test figures at R=0 and R=100 (empty when it has no R=100)."""
    sweep = {}
    rows = _ratio_rows(rev)
    base, full = rows.get("0"), rows.get("100")
    summary = json.loads(git_file(rev, SUMMARY) or b"{}").get("keep100", {})
    if base and full:
        sweep = dict(
            accuracy_0=_number(base["accuracy"]),
            f1_0=_number(base["f1"]),
            f1_100=_number(full["f1"]),
            delta_100=_number(full["delta"]),
            lower_100=_number(full["delta_lower"]),
            upper_100=_number(full["delta_upper"]),
            verdict_100=full["verdict"],
            r_max=summary.get("r_max"),
        )
    return sweep


def _finding(variant: str, phase: str, rev: str, described: str, comparable: bool, s: dict, sweep: dict) -> Finding:
    """The Finding of one synthetic class's figures `s` (metrics/synthetic detail)."""
    rejected = s.get("curation_rejected", 0)
    if rejected:
        described += f" ({rejected} of {rejected + s['curation_kept']} rejected)"
    memorized_count = round(s["memorized_share_features"] * s["n_synthetic"])
    floor = s["memorized_share_features_floor"]
    return Finding(
        variant=variant,
        phase=phase,
        rev=rev,
        changed=described,
        comparable=comparable,
        auroc=s["detector_auroc"],
        auroc_low=s["detector_auroc_ci_low"],
        auroc_high=s["detector_auroc_ci_high"],
        fid_gap=s["domain_fid"] - s["domain_fid_floor"],
        fid_floor_sd=s["domain_fid_floor_sd"],
        precision=s["domain_precision"],
        precision_floor=s["domain_precision_floor"],
        recall=s["domain_recall"],
        recall_floor=s["domain_recall_floor"],
        memorized=s["memorized_share_features"],
        memorized_floor=floor,
        memorized_p=binomtest(memorized_count, s["n_synthetic"], max(floor, 1e-9), alternative="greater").pvalue,
        rejected=rejected,
        **sweep,
    )


def class_recall_table(variant: str, rev: str, confidence: float) -> str:
    """The sweep's per-class test recall at each R, with its paired change from R=0, as its own report gives it
    (plots/ratio_summary.csv's recall_<CLASS> columns; "" where the sweep has two classes)."""
    text = git_file(rev, RATIOS)
    table = pd.read_csv(io.BytesIO(text)) if text else pd.DataFrame(columns=["family"])
    lines = recall_table(table[table["family"] == "keep100"].reset_index(drop=True), confidence)
    return f"Per-class test recall of `{variant}`, cohort keep 100:\n" + "\n".join(lines) if lines else ""


def compare(variant: Finding, default: Finding) -> str:
    """Where the evidence separates a variant from the default, figure by figure."""
    said = []
    if variant.auroc_high < default.auroc_low:
        said.append("detector: better")
    elif variant.auroc_low > default.auroc_high:
        said.append("detector: worse")
    gap_change = variant.fid_gap - default.fid_gap
    if abs(gap_change) > FID_SEPARATION * max(default.fid_floor_sd, variant.fid_floor_sd):
        said.append(f"FID gap: {'better' if gap_change < 0 else 'worse'}")
    if variant.memorized_p < MEMORIZED_P <= default.memorized_p:
        said.append("memorizes more")
    elif default.memorized_p < MEMORIZED_P <= variant.memorized_p:
        said.append("memorizes less")
    return "; ".join(said) or "not separated"


def rank_order(findings: list[Finding]) -> list[Finding]:
    """Best first. A copy of a training scan fools the detector (README: "Judging synthetic scans"), so
    variants that memorize beyond the real floor go last, whatever their AUROC."""
    return sorted(findings, key=lambda f: (f.memorized_p < MEMORIZED_P, f.auroc, f.fid_gap))


def seed_groups(findings: list[Finding]) -> dict[str, list[Finding]]:
    """{variant: its runs under each generator seed} for every variant run under more than one seed."""
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(SEED_SUFFIX.sub("", f.variant), []).append(f)
    return {name: sorted(runs, key=_seed) for name, runs in groups.items() if len(runs) > 1}


def _seed(f: Finding) -> int:
    match = SEED_SUFFIX.search(f.variant)
    return int(match.group(1)) if match else 0


def seed_table(groups: dict[str, list[Finding]]) -> str:
    """Each replicated variant's figures per generator seed, and what separates it from the default on every
    pairing of their seeds: a claim that one seed's run alone supports is a claim about that seed."""
    lines = [
        "| variant | generator seeds | detector AUROC | FID - floor | memorized (p) "
        "| vs default, on every pair of seeds |",
        "|---|---|---|---|---|---|",
    ]
    base = groups.get(DEFAULT)
    for name, runs in groups.items():
        versus = "-"
        if base and name != DEFAULT:
            said = [set(compare(run, reference).split("; ")) for run in runs for reference in base]
            versus = "; ".join(sorted(set.intersection(*said) - {"not separated"})) or "not separated"
        lines.append(
            f"| {name} | {', '.join(str(_seed(f)) for f in runs)} "
            f"| {', '.join(f'{f.auroc:.3f}' for f in runs)} | {', '.join(f'{f.fid_gap:.2f}' for f in runs)} "
            f"| {', '.join(f'{f.memorized:.3f} ({f.memorized_p:.2g})' for f in runs)} | {versus} |"
        )
    return "\n".join(lines)


def rank_table(findings: list[Finding], default: Finding | None) -> str:
    lines = [
        "| variant | changed | detector AUROC (95% CI) | FID - floor (floor sd) | precision / floor | recall / floor "
        "| memorized / floor (p) | vs default |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in rank_order(findings):
        if default is None or f.variant == DEFAULT:
            versus = "-"
        elif not f.comparable:
            versus = "not comparable (measured in another feature space or against other scans)"
        else:
            versus = compare(f, default)
        lines.append(
            f"| {f.variant} | {f.changed} | {f.auroc:.3f} ({f.auroc_low:.3f}-{f.auroc_high:.3f}) "
            f"| {f.fid_gap:.2f} ({f.fid_floor_sd:.2f}) | {f.precision:.2f} / {f.precision_floor:.2f} "
            f"| {f.recall:.2f} / {f.recall_floor:.2f} | {f.memorized:.3f} / {f.memorized_floor:.3f} "
            f"({f.memorized_p:.2g}) | {versus} |"
        )
    return "\n".join(lines)


def sweep_table(findings: list[Finding]) -> str:
    lines = [
        "| variant | R=0 accuracy | R=100 difference (one-sided bounds) | verdict at R=100 | R_max | F1 R=0 / R=100 |",
        "|---|---|---|---|---|---|",
    ]
    for f in sorted(findings, key=lambda f: -(f.delta_100 if f.delta_100 is not None else -1)):
        if f.delta_100 is None:
            lines.append(f"| {f.variant} | no ratio summary | | | | |")
            continue
        r_max = "not determined" if f.r_max is None else f"{f.r_max:g}%"
        lines.append(
            f"| {f.variant} | {f.accuracy_0:.3f} | {f.delta_100:+.3f} ({f.lower_100:+.3f}, {f.upper_100:+.3f}) "
            f"| {f.verdict_100} | {r_max} | {f.f1_0:.3f} / {f.f1_100:.3f} |"
        )
    return "\n".join(lines)


def save_figure(findings: list[Finding], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(findings, key=lambda f: f.auroc)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.35 * len(ordered) + 1.5), sharey=True)
    y = range(len(ordered))
    left.errorbar(
        [f.auroc for f in ordered],
        y,
        xerr=[[f.auroc - f.auroc_low for f in ordered], [f.auroc_high - f.auroc for f in ordered]],
        fmt="o",
        capsize=3,
    )
    left.axvline(0.5, color="grey", ls=":")
    left.axvline(0.75, color="red", ls="--", lw=0.8)
    left.set(yticks=list(y), yticklabels=[f.variant for f in ordered], xlabel="detector AUROC (0.5: indistinguishable)")
    right.errorbar([f.fid_gap for f in ordered], y, xerr=[f.fid_floor_sd for f in ordered], fmt="s", capsize=3)
    right.axvline(0, color="grey", ls=":")
    right.set(xlabel="domain FID - real-vs-real floor (bar: floor sd)")
    fig.suptitle("Generator variants on the Kermany sample's validation split (32 px detector)")
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
    findings = [
        f
        for name, rev, params in found
        for f in findings_of(name, rev, params, reference_params(name, defaults, added), added)
    ]
    ranked = [f for f in findings if f.phase == "rank"]
    swept = [f for f in findings if f.phase == "sweep"]
    if not findings:
        raise SystemExit("no finished rank-/sweep- experiment found: run scripts/agenda_study.sh first")
    default = next((f for f in ranked if f.variant == DEFAULT), None)
    groups = seed_groups(ranked)
    text = "\n\n".join(
        [
            "## Generator variants, validation split (copying ones last, then best detector AUROC first)",
            rank_table(ranked, default),
            *(["## Generator seed replicates, validation split", seed_table(groups)] if groups else []),
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
        text += f"\n\nsamples_best.png: real (top rows) and synthetic scans of the best-ranked run, `{best.variant}`."
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "findings.md").write_text(text + "\n")
    with open(args.out / "findings.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(Finding)])
        writer.writeheader()
        writer.writerows(vars(f) for f in findings)
    if ranked:
        save_figure(ranked, args.out / "validation.png")
        # real (top rows) beside synthetic scans of the default and of the best-ranked variant
        for role, f in (("default", default), ("best", best)):
            if f and (grid := git_file(f.rev, SAMPLES)):
                (args.out / f"samples_{role}.png").write_bytes(grid)
    print(text)


if __name__ == "__main__":
    main()
