"""Peak memory and time of the pixel-space memorization search: nearest_rows on uint8 rows vs sklearn's
NearestNeighbors on float32 rows (what evaluate did before), on the same scans.

    python benchmarks/memorization_memory.py [--train 2000] [--synthetic 200] [--size 256]

Each method runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own; the inputs
(uint8 arrays of scan-like noise) are built there too and their size is printed beside the peak.
The two must agree on every nearest index. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _inputs(train: int, synthetic: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (train, size * size), dtype=np.uint8)
    query = reference[rng.choice(train, synthetic)] // 2 + rng.integers(
        0, 128, (synthetic, size * size), dtype=np.uint8
    )
    return query, reference


def _measure(method: str, train: int, synthetic: int, size: int) -> None:
    from sklearn.neighbors import NearestNeighbors

    from synthratio.evaluation.memorization import nearest_rows

    query, reference = _inputs(train, synthetic, size)  # both libraries and the inputs load before the baseline
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if method == "sklearn float32":
        index = NearestNeighbors(n_neighbors=1).fit(reference.astype(np.float32))
        rows = index.kneighbors(query.astype(np.float32))[1][:, 0]
    else:
        rows = nearest_rows(query, reference).index
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "extra_mb": (peak - baseline) / 1024,
                "inputs_mb": (query.nbytes + reference.nbytes) / 2**20,
                "index": rows.tolist(),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=2000, help="training (reference) scans")
    parser.add_argument("--synthetic", type=int, default=200, help="synthetic (query) scans")
    parser.add_argument("--size", type=int, default=256, help="px, square")
    parser.add_argument("--method", help=argparse.SUPPRESS)  # set in the measuring subprocess
    args = parser.parse_args()
    if args.method:
        return _measure(args.method, args.train, args.synthetic, args.size)
    results = {}
    for method in ("sklearn float32", "nearest_rows uint8"):
        command = [
            sys.executable,
            __file__,
            "--method",
            method,
            f"--train={args.train}",
            f"--synthetic={args.synthetic}",
            f"--size={args.size}",
        ]
        results[method] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    agree = results["sklearn float32"]["index"] == results["nearest_rows uint8"]["index"]
    print(
        f"{args.synthetic} synthetic vs {args.train} training scans at {args.size} px; nearest indices agree: {agree}\n"
    )
    print("| method | inputs (MB) | peak above inputs (MB) | seconds |")
    print("|---|---:|---:|---:|")
    for method, result in results.items():
        print(f"| {method} | {result['inputs_mb']:.0f} | {result['extra_mb']:.0f} | {result['seconds']:.1f} |")


if __name__ == "__main__":
    main()
