"""Training throughput of the pixel backend: the bare UNet2DModel step against the shared `train_diffusion` loop.

    python benchmarks/pixel_speed.py                                   # GPU: 128 px, batch 64, 24M-param UNet
    python benchmarks/pixel_speed.py --size 32 --batch 16 --steps 20 --channels 32 64 64 --layers 1   # CPU check

Both run the same UNet, shapes and mixed precision (finetune.mixed_precision=auto: bf16 on a GPU that has it)
on random scans. The bare step is forward + MSE + backward + AdamW on data already on the device; the loop
adds what training needs (batch draws and flips on the CPU, seeded noise and timesteps, gradient clipping,
loss checks, the LR schedule). Prints a markdown table: img/s, the loop's share of the bare speed, and the
peak CUDA memory on a GPU. Each is timed after `--warmup` untimed steps; with `--rounds` > 1 the two
alternate and the best round of each counts (other work on a shared machine only slows a round down).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthratio.config import FinetuneConfig, load_params
from synthratio.diffusion.pixel import build_unet, pixel_task
from synthratio.diffusion.training import resolve_mixed_precision, train_diffusion
from synthratio.runtime import set_progress

REPO = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: torch.device) -> str:
    return f"{torch.cuda.max_memory_allocated() / 2**30:.2f}" if device.type == "cuda" else "-"


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def bare_step_speed(config: FinetuneConfig, device: torch.device, *, warmup: int, steps: int) -> float:
    """img/s of the plain eager step: forward, MSE to the noise, backward, AdamW."""
    unet = build_unet(config).to(device).train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate)
    bf16 = resolve_mixed_precision(config, device) == "bf16"
    shape = (config.batch_size, 1, config.image_size, config.image_size)
    data = torch.rand((4 * config.batch_size, *shape[1:]), device=device) * 2 - 1
    alpha_bar = torch.linspace(0.999, 0.001, config.train_timesteps, device=device)
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            started = time.perf_counter()
        x0 = data[torch.randint(len(data), (config.batch_size,), device=device)]
        t = torch.randint(config.train_timesteps, (config.batch_size,), device=device)
        noise = torch.randn(shape, device=device)
        a = alpha_bar[t].view(-1, 1, 1, 1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            prediction = unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t).sample
        loss = F.mse_loss(prediction.float(), noise)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return steps * config.batch_size / (time.perf_counter() - started)


def loop_speed(config: FinetuneConfig, device: torch.device, *, warmup: int, steps: int) -> float:
    """img/s of `train_diffusion` on the pixel task (its own timer covers the optimizer steps only)."""
    shape = (4 * config.batch_size, config.image_size, config.image_size)
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    labels = np.zeros(len(images), dtype=np.int64)
    warm = dataclasses.replace(config, steps=max(warmup, 1), warmup_steps=0)
    train_diffusion(pixel_task(images, labels, ("CNV",), config=warm), warm, device)
    _reset_peak(device)
    timed = dataclasses.replace(config, steps=steps, warmup_steps=0)
    return train_diffusion(pixel_task(images, labels, ("CNV",), config=timed), timed, device).images_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="px, square")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--channels", type=int, nargs="+", default=[64, 128, 256, 256], help="UNet channels per level")
    parser.add_argument("--layers", type=int, default=2, help="ResNet layers per UNet block")
    parser.add_argument("--rounds", type=int, default=1, help="alternating timed rounds; the best of each counts")
    args = parser.parse_args()
    set_progress(False)  # no bars between the table's lines

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = dataclasses.replace(
        load_params(REPO / "params.yaml").finetune,
        image_size=args.size,
        batch_size=args.batch,
        block_channels=tuple(args.channels),
        layers_per_block=args.layers,
        class_conditional=False,
        checkpoint_every=0,
    )
    millions = sum(p.numel() for p in build_unet(config).parameters()) / 1e6
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{name}; {args.size} px, batch {args.batch}, UNet {millions:.1f}M params "
        f"{list(args.channels)}x{args.layers}, precision {resolve_mixed_precision(config, device)}, "
        f"{args.steps} timed steps\n"
    )
    bare = loop = 0.0
    for _ in range(args.rounds):
        _reset_peak(device)
        bare = max(bare, bare_step_speed(config, device, warmup=args.warmup, steps=args.steps))
        bare_peak = _peak_gib(device)
        loop = max(loop, loop_speed(config, device, warmup=args.warmup, steps=args.steps))
    print("| training step | img/s | vs bare | peak CUDA GiB |")
    print("|---|---|---|---|")
    print(f"| bare UNet2DModel step (forward, backward, AdamW) | {bare:.1f} | 1.00 | {bare_peak} |")
    print(f"| train_diffusion, pixel task | {loop:.1f} | {loop / bare:.2f} | {_peak_gib(device)} |")


if __name__ == "__main__":
    main()
