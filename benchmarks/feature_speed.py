"""Feature-extraction throughput: the bare Inception-v3 ceiling vs the evaluation's file_features pipeline.

    python benchmarks/feature_speed.py [--n 10000] [--device cuda] [--batch 256] [--workers 16]

Writes N scan-like 512 px grayscale PNGs (a bright band with speckle) to a temporary folder, then prints a
markdown table of images/s for:
  - bare Inception-v3 on random (B, 3, 299, 299) tensors already on the device: clean-fid's feature model
    when its weights file is in place (features.CLEANFID_INCEPTION), else torchvision's inception_v3 with
    random weights (same shapes and cost; no download);
  - file_features with that model: PNG decode, clean-fid's clean resize to 299 px, model (what
    evaluate_synthetic does for inception_* metrics);
  - file_features with the domain encoder (simple_cnn at --domain-size px): PNG decode, model.
Decoding and resizing run in --workers DataLoader processes (evaluate.workers in params.yaml).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from synthratio.classify.models import build_classifier
from synthratio.evaluation.features import CLEANFID_INCEPTION, FeatureFn, classifier_feature_fn, file_features

SIZE = 512  # px, the latent backend's scan size


def _scan_file(folder: Path, seed: int) -> Path:
    return folder / f"{seed:06d}.png"


def _write_scan(job: tuple[Path, int]) -> None:
    folder, seed = job
    rng = np.random.default_rng(seed)
    rows = np.arange(SIZE)[:, None]
    band = 150 * np.exp(-((rows - SIZE / 2 - rng.normal(0, 30)) ** 2) / (2 * 40**2)) + 30
    speckle = rng.gamma(4.0, 0.25, (SIZE, SIZE))  # multiplicative, mean 1
    Image.fromarray(np.clip(band * speckle, 0, 255).astype(np.uint8)).save(_scan_file(folder, seed))


def inception_model(device: torch.device) -> tuple[FeatureFn, str]:
    """clean-fid's Inception (clean mode) when its weights are present, else a same-shaped stand-in."""
    if CLEANFID_INCEPTION.is_file():
        from cleanfid.features import build_feature_extractor

        return build_feature_extractor(mode="clean", device=device), "clean-fid Inception-v3"
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=False, init_weights=False)
    net.fc = torch.nn.Identity()
    net = net.to(device).eval()

    @torch.no_grad()
    def features(x: torch.Tensor) -> torch.Tensor:
        return net((x.to(device) - 128) / 128)

    return features, "torchvision inception_v3, random weights"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_throughput(fn: FeatureFn, device: torch.device, *, n: int, batch: int) -> float:
    x = torch.rand(batch, 3, 299, 299, device=device) * 255
    fn(x)  # warm-up
    _sync(device)
    started = time.perf_counter()
    for _ in range(max(1, n // batch)):
        fn(x)
    _sync(device)
    return max(1, n // batch) * batch / (time.perf_counter() - started)


def pipeline_throughput(
    files: list[Path], fn: FeatureFn, device: torch.device, *, args: argparse.Namespace, inception: bool
) -> float:
    started = time.perf_counter()
    feats = file_features(files, fn, device, batch_size=args.batch, workers=args.workers, inception_resize=inception)
    _sync(device)
    return len(feats) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="PNG scans written and read")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128, help="images per model call")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes (0: in-process)")
    parser.add_argument("--domain-size", type=int, default=32, help="px the domain encoder sees")
    args = parser.parse_args()
    device = torch.device(args.device)
    inception, inception_name = inception_model(device)
    domain = classifier_feature_fn(build_classifier("simple_cnn", 2, args.domain_size), args.domain_size, device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = [_scan_file(folder, i) for i in range(args.n)]
        started = time.perf_counter()
        with ProcessPoolExecutor(max(1, args.workers)) as pool:
            list(pool.map(_write_scan, [(folder, i) for i in range(args.n)], chunksize=64))
        written = args.n / (time.perf_counter() - started)
        # warm the page cache and the workers' imports
        file_features(files, domain, device, batch_size=args.batch, workers=args.workers)
        rows = [
            (
                f"bare {inception_name}, 299 px tensors on the device",
                bare_throughput(inception, device, n=args.n, batch=args.batch),
            ),
            (
                f"file_features -> {inception_name} ({SIZE} px PNG, clean resize to 299)",
                pipeline_throughput(files, inception, device, args=args, inception=True),
            ),
            (
                f"file_features -> domain simple_cnn at {args.domain_size} px ({SIZE} px PNG)",
                pipeline_throughput(files, domain, device, args=args, inception=False),
            ),
        ]
    print(
        f"{args.n} scans, device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
        f"batch {args.batch}, workers {args.workers}, torch threads {torch.get_num_threads()}; "
        f"PNGs written at {written:.0f}/s\n"
    )
    print("| work | img/s | 10k scans (s) |\n|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {10_000 / rate:,.1f} |")


if __name__ == "__main__":
    main()
