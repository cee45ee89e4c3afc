"""Classifier training throughput: the bare model against the sweep's training loop, in the same run.

bare: random uint8 images already on the device, one fixed batch, a plain loop (float conversion, forward,
cross-entropy, backward, AdamW step), channels_last and bf16 autocast on CUDA like the real loop.
ours: `train_classifier` as the stages call it: uint8 arrays uploaded once, RatioBatchSampler batches at
ratio R gathered on the device, augmentation on the device, per-epoch validation and best-state copy.

The two are measured alternately `--repeats` times and the medians compared, so a load that comes and goes
(a shared machine) hits both alike. Prints a markdown table (img/s and the ratio ours/bare) and the time of a
sweep at the study's scale
extrapolated from the measured throughput. Example:
    python benchmarks/classifier_speed.py --arch resnet18 --size 224 --batch 256 --device cuda --steps 200
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from synthratio.classify.mixing import plan_batches
from synthratio.classify.models import build_classifier
from synthratio.classify.train import LabelledImages, set_seed, train_classifier
from synthratio.config import ARCHS, ClassifierConfig
from synthratio.runtime import autocast


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_throughput(arch: str, size: int, batch: int, *, steps: int, warmup: int, device: torch.device) -> float:
    """Images per second of a plain training loop on one resident random uint8 batch."""
    set_seed(0)
    model = build_classifier(arch, 2, size).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            start = time.perf_counter()
        with autocast(device):
            loss = F.cross_entropy(model(images.float().div_(255)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return steps * batch / (time.perf_counter() - start)


def loop_throughput(arch: str, size: int, batch: int, *, steps: int, ratio: int, device: torch.device) -> float:
    """Images per second of train_classifier over `steps` batches at ratio R (a 1-epoch warm-up run first)."""
    rng = np.random.default_rng(0)
    n_train = batch * steps  # one epoch of `steps` batches
    train = LabelledImages(rng.integers(0, 256, (n_train, size, size), dtype=np.uint8), rng.integers(0, 2, n_train))
    val = LabelledImages(train.images[:batch], train.labels[:batch])
    synthetic = rng.integers(0, 256, (max(batch, n_train // 4), size, size), dtype=np.uint8)
    config = ClassifierConfig(
        arch=arch, image_size=size, batch_size=batch, epochs=1, learning_rate=1e-4, weight_decay=0.0
    )
    plan = plan_batches(train.labels, batch_size=batch, synthetic_labels=[0], ratio=ratio)

    def run(scans: LabelledImages) -> float:
        _sync(device)
        start = time.perf_counter()
        train_classifier(
            scans,
            val,
            config,
            seed=0,
            device=device,
            synthetic=synthetic,
            synthetic_labels=np.zeros(len(synthetic), dtype=np.int64),
            synthetic_classes=[0],
            ratio=ratio,
        )
        _sync(device)
        return time.perf_counter() - start

    run(LabelledImages(train.images[: batch * 2], train.labels[: batch * 2]))  # warm-up: kernels, allocator
    return steps * plan.size / run(train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18", choices=ARCHS)
    parser.add_argument("--size", type=int, default=224, help="image size, px")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=100, help="timed training steps per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed bare steps first")
    parser.add_argument("--ratio", type=int, default=50, help="R of the sweep loop, %%")
    parser.add_argument("--repeats", type=int, default=3, help="alternating measurements of each; medians are compared")
    parser.add_argument("--study-scans", type=int, default=60_000, help="real training scans at the study's scale")
    parser.add_argument("--study-ratios", type=int, default=10, help="ratios of the study's sweep (R=0 added)")
    parser.add_argument("--study-seeds", type=int, default=5, help="classifier seeds (params.yaml sweep.seeds)")
    parser.add_argument("--study-generators", type=int, default=3, help="generator seeds (sweep.generator_seeds)")
    parser.add_argument("--study-epochs", type=int, default=15, help="epochs per run (params.yaml classifier.epochs)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    if args.repeats < 1 or args.steps < 1:
        parser.error(f"--repeats {args.repeats} --steps {args.steps}; both must be >= 1")
    pairs = [
        (
            bare_throughput(args.arch, args.size, args.batch, steps=args.steps, warmup=args.warmup, device=device),
            loop_throughput(args.arch, args.size, args.batch, steps=args.steps, ratio=args.ratio, device=device),
        )
        for _ in range(args.repeats)
    ]
    bare, ours = (float(np.median(values)) for values in zip(*pairs))
    runs = (args.study_ratios * args.study_generators + 1) * args.study_seeds  # R=0 has no generator
    images = runs * args.study_epochs * args.study_scans
    print(f"| {args.arch} {args.size} px, batch {args.batch}, {name}; median of {args.repeats} | img/s |")
    print("|---|---|")
    print(f"| bare training loop (resident random uint8) | {bare:,.1f} |")
    print(f"| train_classifier at R={args.ratio}% (sampler, device augmentation, val) | {ours:,.1f} |")
    print(f"| ratio ours / bare | {ours / bare:.2f} |")
    hours = images / ours / 3600
    print(
        f"\nStudy-scale sweep: ({args.study_ratios} ratios x {args.study_generators} generators + R=0) x "
        f"{args.study_seeds} seeds"
        f" x {args.study_epochs} epochs x "
        f"{args.study_scans:,} scans = {images:,} training images / {ours:,.1f} img/s = {hours:,.2f} h"
        f" ({math.ceil(hours * 60):,} min) on this device"
    )


if __name__ == "__main__":
    main()
