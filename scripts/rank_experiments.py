"""Rank DVC experiments by a synthetic-vs-real distance, best first, with the params each one changed.

    python scripts/rank_experiments.py                      # domain FID of the keep-100 generators, lower is better
    python scripts/rank_experiments.py --metric 'metrics/synthetic/keep_25_gen_*.json:detector_auroc'
    python scripts/rank_experiments.py --metric metrics/summary.json:k100.r_max --order desc

A metrics path with a wildcard ranks by the mean over every file it matches: by default the mean over the
regime's generator seeds, so a variant is ranked as a recipe, not by one lucky generator (the table says
how many were averaged and their range).

Reads `dvc exp show --json` (run here, or a saved copy with --input); a metrics file DVC does not declare (only
metrics/summary.json is a DVC metric; every stage's own figures are plain git-tracked files) is read from the
experiment's commit with git. Every baseline commit shown and every
finished experiment derived from it is ranked; the changed params are those that differ from the
experiment's baseline commit. Queued, running and failed experiments, and finished ones without the
metric, are listed after the ranking, never ranked.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DEFAULT_METRIC = "metrics/synthetic/keep_100_gen_*.json:domain_fid"


@dataclass(frozen=True)
class Variant:
    name: str  # experiment name, or "baseline <rev>" for a commit
    rev: str  # git sha
    state: str  # success | queued | running | failed
    value: float | None  # the metric (mean over the files matched); None when one is missing or not finite
    spread: tuple[float, ...] = ()  # each matched file's value, when a wildcard matched several
    changed: dict[str, Any] = field(default_factory=dict)  # dotted param -> value, where it differs from the baseline


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists are values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _files(data: dict | None, kind: str) -> dict[str, dict]:
    """{file: flattened data} of an experiment's params or metrics (files that failed to load are empty)."""
    files = (data or {}).get(kind) or {}
    return {path: flatten(result.get("data") or {}) for path, result in files.items()}


def metric_values(data: dict | None, metric: str) -> list[float] | None:
    """`path:key` as in `dvc exp show --sort-by` (nested keys dotted, `k100.r_max`), in every metrics file
    the path matches (shell wildcards; a bare key: the first file that has it); None when none has it or a
    value is not a finite number."""
    path, _, key = metric.rpartition(":")
    found = []
    for name, values in _files(data, "metrics").items():
        values = flatten(values)
        if (not path or fnmatch.fnmatchcase(name, path)) and key in values:
            found.append(values[key])
            if not path:
                break
    if not found or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in found
    ):
        return None
    return [float(v) for v in found]


def files_at(rev: str, pattern: str) -> dict[str, dict]:
    """{file: {"data": its JSON}} of the git-tracked files at commit `rev` matching `pattern` (shell
    wildcards), as `dvc exp show --json` lists metrics; {} where git knows no such commit or file."""
    listed = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, "--", str(Path(pattern).parent)], capture_output=True, text=True
    )
    files = {}
    for name in listed.stdout.splitlines() if listed.returncode == 0 else []:
        if fnmatch.fnmatchcase(name, pattern):
            shown = subprocess.run(["git", "show", f"{rev}:{name}"], capture_output=True, text=True, check=True)
            files[name] = {"data": json.loads(shown.stdout)}
    return files


def ranked_variant(
    name: str, rev: str, state: str, data: dict | None, metric: str, changed: dict | None = None
) -> Variant:
    values = metric_values(data, metric)
    path = metric.rpartition(":")[0]
    if values is None and path and not any(fnmatch.fnmatchcase(f, path) for f in _files(data, "metrics")):
        values = metric_values({"metrics": files_at(rev, path)}, metric)  # not a DVC metric: the commit's file
    mean = None if values is None else sum(values) / len(values)
    spread = tuple(values) if values is not None and len(values) > 1 else ()
    return Variant(name, rev, state, mean, spread, changed or {})


def _params(data: dict | None) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for path, values in _files(data, "params").items():
        file_prefix = "" if path == "params.yaml" else f"{path}:"
        flat.update({file_prefix + key: value for key, value in values.items()})
    return flat


def collect(shown: list[dict], metric: str) -> list[Variant]:
    """Baseline commits and their experiments from the parsed `dvc exp show --json` (the workspace row is
    skipped: it is whichever experiment ran or was applied last)."""
    variants = []
    for baseline in shown:
        if baseline.get("rev") == "workspace":
            continue
        base_params = _params(baseline.get("data"))
        label = baseline.get("name") or baseline["rev"][:7]
        variants.append(ranked_variant(f"baseline {label}", baseline["rev"], "success", baseline.get("data"), metric))
        for exp_range in baseline.get("experiments") or []:
            executor = exp_range.get("executor") or {}
            for exp in exp_range.get("revs") or []:
                params = _params(exp.get("data"))
                changed = {k: v for k, v in params.items() if base_params.get(k, object()) != v}
                state = executor.get("state") or ("failed" if exp.get("error") else "success")
                name = exp_range.get("name") or exp.get("name") or exp["rev"][:7]
                variants.append(ranked_variant(name, exp["rev"], state, exp.get("data"), metric, changed))
    return variants


def rank(variants: list[Variant], order: Literal["asc", "desc"] = "asc") -> tuple[list[Variant], list[Variant]]:
    """(ranked finished variants with the metric, best first; the rest in their original order)."""
    if order not in ("asc", "desc"):
        raise ValueError(f"order={order!r}; expected 'asc' (lower is better) or 'desc' (higher is better)")
    finished = [v.state == "success" and v.value is not None for v in variants]
    ranked = sorted((v for v, ok in zip(variants, finished) if ok), key=lambda v: v.value, reverse=order == "desc")
    return ranked, [v for v, ok in zip(variants, finished) if not ok]


def _format_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def format_table(ranked: list[Variant], rest: list[Variant], metric: str, order: str) -> str:
    key = metric.rpartition(":")[2]
    better = "lower" if order == "asc" else "higher"
    lines = [
        f"Ranked by {metric} ({better} is better)",
        "",
        f"| rank | experiment | {key} | changed params |",
        "|---|---|---|---|",
    ]
    for place, variant in enumerate(ranked, 1):
        changed = ", ".join(f"{k}={_format_value(v)}" for k, v in sorted(variant.changed.items())) or "-"
        spread = variant.spread
        value = f"{variant.value:.6g}" + (
            f" (mean of {len(spread)}: {min(spread):.4g} to {max(spread):.4g})" if spread else ""
        )
        lines.append(f"| {place} | {variant.name} | {value} | {changed} |")
    if not ranked:
        lines.append(f"| - | no finished experiment has {metric} | | |")
    for variant in rest:
        why = f"{variant.state}" if variant.state != "success" else f"no {key}"
        lines.append(f"not ranked: {variant.name} ({why})")
    return "\n".join(lines)


def exp_show(all_commits: bool) -> list[dict]:
    """Parsed `dvc exp show --json` of the repository in the working directory."""
    args = ["dvc", "exp", "show", "--json", *(["-A"] if all_commits else [])]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        help=f"metrics file:key, as in dvc exp show --sort-by (default {DEFAULT_METRIC})",
    )
    parser.add_argument(
        "--order",
        choices=("asc", "desc"),
        default="asc",
        help="asc: lower is better (distances); desc: higher is better",
    )
    parser.add_argument("--input", type=Path, help="a saved `dvc exp show --json` instead of running it")
    parser.add_argument("-A", "--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    args = parser.parse_args(argv)
    shown = json.loads(args.input.read_text()) if args.input else exp_show(args.all_commits)
    variants = collect(shown, args.metric)
    ranked, rest = rank(variants, args.order)
    print(format_table(ranked, rest, args.metric, args.order))
    if not ranked:
        sys.exit(1)


if __name__ == "__main__":
    main()
