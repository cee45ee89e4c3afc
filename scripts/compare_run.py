"""How this run's answer compares with a recorded run of the same settings (what the quick start ends with):
each headline figure beside the reference's, the paired differences apart in units of their own standard
error, and whether that is a CPU's rounding or something else.

    python scripts/compare_run.py                     # against docs/quickstart/ (the smoke run on a fresh clone)
    python scripts/compare_run.py --record DIR        # record this run as a reference

Why two runs of the same settings differ at all: on one machine CPU training is deterministic, but another
processor (AVX2 against AVX-512), another thread count or another torch build rounds floating-point sums
differently; a generator's 200 steps and a classifier's 15 epochs carry a last-bit difference into a
different model, as another seed would. So the yardstick is the run's own seed-to-seed spread, which its
standard errors measure: differences within a few of them are rounding, larger ones are not.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

import pandas as pd

from synthratio.report import headline_name

REFERENCE = Path("docs/quickstart")
HEADLINE, TABLE, MACHINE = "summary.json", "ratio_summary.csv", "machine.json"
ROUNDING_SE = 3.0  # paired differences further apart than this many standard errors: not rounding


def _processor() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    names = (
        [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        if cpuinfo.is_file()
        else []
    )
    return names[0] if names else platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """What decides the rounding: processor, Python, torch and its threads."""
    import torch

    return {
        "processor": _processor(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
    }


def compare(fresh: dict, reference: dict, fresh_table: pd.DataFrame, reference_table: pd.DataFrame) -> list[str]:
    """Lines comparing two headlines (metrics/summary.json) regime by regime, with a last line saying whether
    the differences are rounding-sized (ROUNDING_SE standard errors of the paired difference at the largest x)."""
    lines, far, flipped = [], [], []
    for regime in reference:
        if regime not in fresh:
            lines.append(f"  {regime}: in the reference, not in this run (other sweep.keep?)")
            far.append(regime)
            continue
        now, then = fresh[regime], reference[regime]
        rows = [
            table[table["family"].map(headline_name) == regime].set_index("x")
            for table in (fresh_table, reference_table)
        ]
        largest = max(rows[1].index)
        se = max(float(rows[0].loc[largest, "se"]), float(rows[1].loc[largest, "se"]))
        apart = abs(now["delta"] - then["delta"]) / se if se > 0 else float("inf")
        verdict = "same verdict" if (now["r_max"], now["stop"]) == (then["r_max"], then["stop"]) else "VERDICT DIFFERS"
        if verdict != "same verdict":
            flipped.append(regime)
        if apart > ROUNDING_SE:
            far.append(regime)
        lines.append(
            f"  {regime}: R_max {now['r_max']} (reference {then['r_max']}), stop {now['stop']} ({then['stop']}); "
            f"difference at R={largest} {now['delta']:+.4f} ({then['delta']:+.4f}), {apart:.1f} se apart; lower "
            f"bound {now['lower']:+.4f} ({then['lower']:+.4f}); FID gap {now['fid_gap']:.3g} ({then['fid_gap']:.3g}), "
            f"detector AUROC {now['det_auroc']:.3f} ({then['det_auroc']:.3f}); {verdict}"
        )
    if far:
        lines.append(
            f"NOT ROUNDING: {', '.join(far)} moved more than {ROUNDING_SE:g} standard errors (or is missing): "
            "other settings or a broken install; compare `pip freeze` and params.yaml with the reference's."
        )
    elif flipped:
        lines.append(
            f"Rounding: every difference is within {ROUNDING_SE:g} standard errors, but a lower bound near -margin "
            f"crossed it ({', '.join(flipped)}): a borderline verdict at this size, not a broken run."
        )
    else:
        lines.append(f"Rounding at most: same verdicts, every difference within {ROUNDING_SE:g} standard errors.")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, default=REFERENCE, help=f"recorded run (default {REFERENCE})")
    parser.add_argument("--record", type=Path, help="record this run's headline and table into this folder")
    parser.add_argument("--metrics", type=Path, default=Path("metrics"), help="this run's paths.metrics")
    parser.add_argument("--plots", type=Path, default=Path("plots"), help="this run's paths.plots")
    args = parser.parse_args(argv)
    fresh_files = (args.metrics / HEADLINE, args.plots / TABLE)
    if args.record:
        args.record.mkdir(parents=True, exist_ok=True)
        for file in fresh_files:
            shutil.copyfile(file, args.record / file.name)
        (args.record / MACHINE).write_text(json.dumps(machine(), indent=2) + "\n")
        print(f"recorded {', '.join(map(str, fresh_files))} and this machine into {args.record}")
        return
    if not (args.reference / HEADLINE).is_file():
        print(f"compare_run: no reference run in {args.reference} (record one with --record)")
        return
    recorded = json.loads((args.reference / MACHINE).read_text())
    here = machine()
    print(
        f"This run against the reference in {args.reference} (theirs in brackets; recorded on "
        + ", ".join(f"{k} {v}" for k, v in recorded.items())
        + "; here "
        + ", ".join(f"{k} {v}" for k, v in here.items())
        + "):"
    )
    lines = compare(
        json.loads(fresh_files[0].read_text()),
        json.loads((args.reference / HEADLINE).read_text()),
        pd.read_csv(fresh_files[1]),
        pd.read_csv(args.reference / TABLE),
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
