"""Time and peak memory of prepare and evaluate_synthetic as the data set grows, at a 512-px run's sizes.

    python benchmarks/scale_memory.py [--scans 2000 8000 32000] [--dir /tmp/synthratio-scale]

For each size N it writes a folder of N scans ({CLASS}/{CLASS}-{patient}-{n}.jpeg), CNV and NORMAL alike, 3 per
patient, 512-1024 px wide and 496 high (--height), from the phantom: a pool of POOL_PER_CLASS rendered scans per
class, each file one of them with its own seeded speckle, so no two files are pixel-identical and prepare keeps
every one (rendering 32k scans would take 10 minutes on two cores). Then, each in a fresh process:

- prepare: prepare_dataset at 512 and 224 px (a 512-px generator, a 224-px classifier), params.yaml's settings,
  val and test 0.15 of the patients each (real data's shares), two decoding workers;
- evaluate: evaluate_synthetic of SYNTHETIC phantom CNV scans at 512 px against the prepared CNV val scans and
  every CNV training scan (ScanRows of the memory maps, as the stage reads them), params.yaml's evaluate
  settings; features from an untrained simple_cnn at 64 px (the cost of the classifier is not what is measured).

Each prints its wall time, its peak RSS (ru_maxrss: it counts the pages of memory-mapped scans read so far,
which the kernel can drop) and its peak anonymous memory (RssAnon, sampled every 20 ms: what the process itself
holds), each also as the extra over the process after its imports. Last, the growth exponent b of each figure,
figure ~ N^b fitted over the sizes: 1 is linear, 0 flat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
POOL_PER_CLASS = 60  # rendered phantom scans per class that the files are drawn from
SCANS_PER_PATIENT = 3
WIDTHS = (512, 768, 1024)
SIZES = (512, 224)  # finetune.image_size and classifier.image_size of a 512-px run
SYNTHETIC = 256  # generate.num_images of the recipe
CLASSES = ("CNV", "NORMAL")


class PeakSampler:
    """Peak RssAnon and VmRSS of this process, read from /proc every `interval` seconds in a thread."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak = interval, {"RssAnon": 0, "VmRSS": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def read(self) -> dict[str, int]:
        fields = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in self.peak:
                fields[key] = int(value.split()[0]) * 1024  # kB
        return fields

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, value in self.read().items():
                self.peak[key] = max(self.peak[key], value)
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def write_folder(root: Path, scans: int, height: int) -> None:
    """`scans` phantom-derived files in flat class folders, named as Kermany names them."""
    from PIL import Image

    from synthratio.data.phantom import render_scan

    rng = np.random.default_rng(0)
    pool = {
        label: [render_scan(rng, label, width=int(rng.choice(WIDTHS)), height=height) for _ in range(POOL_PER_CLASS)]
        for label in CLASSES
    }
    for i in range(scans):
        label = CLASSES[i % 2]
        patient, n = 100_000 + i // (2 * SCANS_PER_PATIENT), (i // 2) % SCANS_PER_PATIENT + 1
        base = pool[label][rng.integers(POOL_PER_CLASS)]
        speckle = rng.integers(-6, 7, base.shape, dtype=np.int16)
        scan = np.clip(base.astype(np.int16) + speckle, 0, 255).astype(np.uint8)
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scan).save(folder / f"{label}-{patient}-{n}.jpeg", quality=95)


def _prepare(folder: Path, out: Path) -> dict:
    from synthratio.config import load_params
    from synthratio.data.ingest import prepare_dataset

    config = replace(load_params(REPO / "params.yaml").prepare, val_fraction=0.15, test_fraction=0.15, workers=2)
    summary = prepare_dataset(folder, out, config, sizes=SIZES)
    return {"scans": summary["scans"]}


def _synthetic_files(folder: Path) -> list[Path]:
    """SYNTHETIC phantom CNV scans squeezed to 512 px, as generate writes them (PNG)."""
    from PIL import Image

    from synthratio.data.geometry import to_square
    from synthratio.data.phantom import render_scan

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    files = [folder / f"{i:06d}.png" for i in range(SYNTHETIC)]
    pool = [to_square(render_scan(rng, "CNV", width=512, height=512), SIZES[0], "squeeze") for _ in range(16)]
    for i, file in enumerate(files):
        noisy = pool[i % len(pool)].astype(np.int16) + rng.integers(-6, 7, (SIZES[0], SIZES[0]), dtype=np.int16)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(file)
    return files


def _evaluate(prepared: Path, work: Path) -> dict:
    import torch

    from synthratio.classify.models import build_classifier
    from synthratio.config import load_params
    from synthratio.data.cohort import load_cohort
    from synthratio.evaluation.evaluate import evaluate_synthetic, load_heldout
    from synthratio.evaluation.features import classifier_feature_fn

    cnv = CLASSES.index("CNV")
    config = load_params(REPO / "params.yaml").evaluate
    cohort = load_cohort(prepared, SIZES[0], num_classes=2, label=cnv, keep=100, subset_seed=0)
    of_class = cohort.labels == cnv
    # as the stage reads them; before ScanRows (issue 28) the stage indexed the memory map, reading every scan
    train = cohort.images.select(of_class) if hasattr(cohort.images, "select") else cohort.images[of_class]
    real = load_heldout(prepared, "val", SIZES[0], label=cnv, train=train)
    torch.manual_seed(0)
    feature_fn = classifier_feature_fn(build_classifier("simple_cnn", 2, 64), 64, torch.device("cpu"))
    files = _synthetic_files(work / "synthetic")
    metrics = evaluate_synthetic(
        files, real, feature_fn, device=torch.device("cpu"), config=config, workdir=work / "real"
    )
    return {"real_train": metrics["n_real_train"], "real_heldout": metrics["n_real"]}


def child(stage: str, root: Path) -> None:
    """One measurement, in this (fresh) process: prints a JSON line."""
    import torch  # noqa: F401  (imported before the baseline, as every stage imports it)

    import synthratio.data.ingest  # noqa: F401
    import synthratio.evaluation.evaluate  # noqa: F401

    with PeakSampler() as sampler:
        baseline = sampler.read()
        started = time.perf_counter()
        if stage == "prepare":
            counts = _prepare(root / "raw", root / "prepared")
        else:
            with tempfile.TemporaryDirectory(dir=root) as work:
                counts = _evaluate(root / "prepared", Path(work))
        seconds = time.perf_counter() - started
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss": maxrss,
                "peak_anon": sampler.peak["RssAnon"],
                "extra_rss": maxrss - baseline["VmRSS"],
                "extra_anon": sampler.peak["RssAnon"] - baseline["RssAnon"],
                **counts,
            }
        )
    )


def _exponent(sizes: list[int], values: list[float]) -> float:
    """b of value ~ size^b, least squares in log-log."""
    return float(np.polyfit(np.log(sizes), np.log(np.maximum(values, 1e-9)), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, nargs="+", default=[2000, 8000, 32000])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "synthratio-scale")
    parser.add_argument("--height", type=int, default=496, help="px; code before prepare.max_upscale needs 512")
    parser.add_argument("--child", choices=["prepare", "evaluate"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.root)
        return
    results: dict[str, list[dict]] = {"prepare": [], "evaluate": []}
    gib = 2**30
    print(
        "| stage | scans | real CNV train / held-out | seconds | peak RSS GiB | peak anon GiB | extra RSS GiB "
        "| extra anon GiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for scans in args.scans:
        root = args.dir / f"n{scans}"
        shutil.rmtree(root, ignore_errors=True)
        write_folder(root / "raw", scans, args.height)
        for stage in results:
            command = [sys.executable, __file__, "--child", stage, "--root", str(root)]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
            if done.returncode:
                raise SystemExit(f"{stage} at {scans} scans failed:\n{done.stderr[-3000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            results[stage].append({"scans": scans, **figures})
            counts = f"{figures['real_train']} / {figures['real_heldout']}" if stage == "evaluate" else "-"
            print(
                f"| {stage} | {scans} | {counts} | {figures['seconds']:.1f} | {figures['peak_rss'] / gib:.2f} | "
                f"{figures['peak_anon'] / gib:.2f} | {figures['extra_rss'] / gib:.2f} | "
                f"{figures['extra_anon'] / gib:.2f} |",
                flush=True,
            )
        shutil.rmtree(root)
    if len(args.scans) > 1:
        print("\ngrowth exponent b (figure ~ scans^b; 1 linear, 0 flat), fitted over", args.scans)
        print("| stage | seconds | peak RSS | peak anon | extra anon |")
        print("|---|---|---|---|---|")
        for stage, rows in results.items():
            sizes = [row["scans"] for row in rows]
            b = {
                key: _exponent(sizes, [row[key] for row in rows])
                for key in ("seconds", "peak_rss", "peak_anon", "extra_anon")
            }
            print(
                f"| {stage} | {b['seconds']:.2f} | {b['peak_rss']:.2f} | {b['peak_anon']:.2f} | {b['extra_anon']:.2f} |"
            )


if __name__ == "__main__":
    main()
