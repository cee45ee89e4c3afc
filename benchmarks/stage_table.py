"""Wall time and peak memory of each pipeline stage, from the logs of `dvc repro` / `dvc exp run`.

    python benchmarks/stage_table.py full.log lora.log      # scripts/rehearse_sd15.sh runs it on its two logs

Every stage ends with one line (runtime.run_stage): `stage finetune --keep 100 --generator 0: <what it did>
(took 2m09s; peak RSS 15.20 GiB, peak CUDA 12.1 GiB)`. This prints them as a markdown table, one row per stage
and log, in the order they ran; stages DVC restored from its cache did not run and have no row. Peak RSS is the
stage process's ru_maxrss; it counts the pages of memory-mapped scans read so far, which the kernel can drop
again.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

STAGE_LINE = re.compile(
    r"INFO synthratio: stage (?P<stage>[^:]+): (?P<done>.*) \(took (?P<took>[^;]+); peak RSS (?P<rss>[\d.]+) GiB"
    r"(?:, peak CUDA (?P<cuda>[\d.]+) GiB)?\)$"
)


def stage_rows(log: Path) -> list[dict[str, str]]:
    """One dict per stage line of the log, in order."""
    rows = []
    for line in log.read_text(errors="replace").splitlines():
        match = STAGE_LINE.search(line)
        if match:
            rows.append({key: value or "" for key, value in match.groupdict().items()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", type=Path, nargs="+")
    args = parser.parse_args()
    print("| log | stage | took | peak RSS GiB | peak CUDA GiB | what it did |")
    print("|---|---|---|---|---|---|")
    for log in args.logs:
        rows = stage_rows(log)
        if not rows:
            print(f"| {log.stem} | (no stage line: nothing ran, or the run failed first) | | | | |")
        for row in rows:
            done = row["done"] if len(row["done"]) <= 90 else row["done"][:87] + "..."
            print(f"| {log.stem} | {row['stage']} | {row['took']} | {row['rss']} | {row['cuda'] or '-'} | {done} |")


if __name__ == "__main__":
    main()
