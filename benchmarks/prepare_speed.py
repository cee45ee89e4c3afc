"""Throughput of `prepare` (decode, hash, wedge masking, resize) on the real Kermany sample, per worker count.

    python benchmarks/prepare_speed.py [--sizes 32 64 128] [--workers 1 2]

Prints a table of scans/s. The sample's 500 CNV and NORMAL scans are read in place (its flat {CLASS}/*.jpeg
layout); a warm-up pass runs first so that every timed pass reads from the same page cache.
"""

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from synthratio.config import load_params
from synthratio.data.ingest import prepare_dataset

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("SYNTHRATIO_KERMANY_SAMPLE", REPO.parent / "shared" / "kermany-sample"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    args = parser.parse_args()
    # the recipe's prepare settings, at the real-data fractions and one worker (the timed passes set their own)
    config = replace(load_params(REPO / "params.yaml").prepare, val_fraction=0.15, test_fraction=0.25, workers=1)
    with tempfile.TemporaryDirectory() as tmp:
        prepare_dataset(SAMPLE, Path(tmp) / "warm", config, sizes=tuple(args.sizes))
        print(f"{'workers':>7}  {'scans':>5}  {'sizes':>12}  {'seconds':>7}  {'scans/s':>7}")
        for workers in args.workers:
            started = time.perf_counter()
            summary = prepare_dataset(
                SAMPLE, Path(tmp) / f"out{workers}", replace(config, workers=workers), sizes=tuple(args.sizes)
            )
            seconds = time.perf_counter() - started
            sizes = ",".join(map(str, args.sizes))
            print(
                f"{workers:>7}  {summary['scans']:>5}  {sizes:>12}  {seconds:>7.2f}  {summary['scans'] / seconds:>7.1f}"
            )


if __name__ == "__main__":
    main()
