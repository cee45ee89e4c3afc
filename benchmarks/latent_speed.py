"""Throughput of the latent backend at Stable Diffusion 1.5 size, against the bare UNet.

    python benchmarks/latent_speed.py            # GPU: SD-1.5-sized pipeline, random weights, 512 px, batch 32, bf16
    python benchmarks/latent_speed.py --tiny     # the same code on the tiny config, on the CPU, in seconds

The pipeline comes from `build_sd_pipeline` of tests/tiny_sd.py ("sd15" preset: UNet 860M, VAE, CLIP ViT-L text
encoder shapes; throughput depends on shape, not weights). Training: the bare eager step (forward, MSE, backward,
AdamW on latents already on the device) against `train_diffusion` on the latent backend's task (cached
latents on the host, mirrored and paired with a prompt per draw, seeded noise and timesteps, clipping,
LR schedule). Sampling: the bare UNet forward with classifier-free guidance (batch 2B) per step against
`sample_latent_images` (the generate stage's StableDiffusionPipeline call with DPM-Solver++ and guidance,
text encoding and VAE decoding included). Prints a markdown table with img/s, the share of the bare speed
and the peak CUDA memory. Everything is timed after `--warmup` untimed steps or one untimed batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pixel_speed import _peak_gib, _reset_peak, _sync  # same folder: run as a script

from synthratio.config import FinetuneConfig, load_params
from synthratio.diffusion.latent import latent_task, latent_training_scheduler
from synthratio.diffusion.sampling import make_sampler, sample_latent_images
from synthratio.diffusion.training import resolve_mixed_precision, train_diffusion
from synthratio.runtime import set_progress

REPO = Path(__file__).resolve().parents[1]
PROMPT = "oct scan showing cnv"
TEXT_TOKENS = 77  # CLIP's context length: the UNet's cross-attention sees (B, 77, width)


@dataclass(frozen=True)
class BareRun:
    """How the bare UNet is timed: where, in which precision, and over how many untimed and timed steps."""

    device: torch.device
    bf16: bool
    warmup: int
    steps: int

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)


def bare_train_speed(unet: torch.nn.Module, shape: tuple[int, ...], width: int, run: BareRun) -> float:
    """img/s of the plain step: forward on noised latents with a text context, MSE to the noise, backward, AdamW."""
    device, warmup, steps = run.device, run.warmup, run.steps
    batch = shape[0]
    unet.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    data = torch.randn((4 * batch, *shape[1:]), device=device)
    context = torch.randn((batch, TEXT_TOKENS, width), device=device)
    alpha_bar = torch.linspace(0.999, 0.001, 1000, device=device)
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            started = time.perf_counter()
        x0 = data[torch.randint(len(data), (batch,), device=device)]
        t = torch.randint(1000, (batch,), device=device)
        noise = torch.randn(shape, device=device)
        a = alpha_bar[t].view(-1, 1, 1, 1)
        with run.autocast():
            prediction = unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, encoder_hidden_states=context).sample
        F.mse_loss(prediction.float(), noise).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    return steps * batch / (time.perf_counter() - started)


def loop_train_speed(
    pipeline, config: FinetuneConfig, shape: tuple[int, ...], *, device: torch.device, warmup: int, steps: int
) -> float:
    """img/s of `train_diffusion` on `latent_task` (its own timer covers the optimizer steps only)."""
    with torch.no_grad():
        prompts = pipeline.encode_prompt(PROMPT, device, 1, False)[0]
    latents = torch.randn((8 * shape[0], *shape[1:]))  # 4B scans and their mirror images, on the host as cached
    scheduler = latent_training_scheduler(dict(pipeline.scheduler.config), config)
    for count in (max(warmup, 1), steps):
        run = dataclasses.replace(config, steps=count, warmup_steps=0)
        task = latent_task(pipeline.unet, scheduler, latents, prompt_embeds=prompts)
        speed = train_diffusion(task, run, device).images_per_second
        if count != steps:
            _reset_peak(device)
    return speed


@torch.no_grad()
def bare_sample_step_seconds(unet: torch.nn.Module, shape: tuple[int, ...], width: int, run: BareRun) -> float:
    """Seconds per bare UNet forward at batch 2B (classifier-free guidance: unconditional + conditional)."""
    device, warmup, steps = run.device, run.warmup, run.steps
    unet.eval()
    sample = torch.randn((2 * shape[0], *shape[1:]), device=device)
    context = torch.randn((2 * shape[0], TEXT_TOKENS, width), device=device)
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            started = time.perf_counter()
        with run.autocast():
            unet(sample, torch.full((2 * shape[0],), 500, device=device), encoder_hidden_states=context)
    _sync(device)
    return (time.perf_counter() - started) / steps


def pipeline_sample_speed(
    pipeline, config: FinetuneConfig, batch: int, *, device: torch.device, steps: int, guidance: float
) -> float:
    """img/s of `sample_latent_images` (one untimed batch first), DPM-Solver++ on the training schedule."""
    scheduler = latent_training_scheduler(dict(pipeline.scheduler.config), config)
    sampler = make_sampler("dpmsolver++", scheduler.config, "trailing", clip_x0=False)
    for first_seed in (0, batch):
        if first_seed:
            _reset_peak(device)
            _sync(device)
            started = time.perf_counter()
        seeds = list(range(first_seed, first_seed + batch))
        images = list(
            sample_latent_images(
                pipeline,
                sampler,
                seeds,
                prompt=PROMPT,
                inference_steps=steps,
                guidance_scale=guidance,
                device=device,
                batch_size=batch,
            )
        )
    _sync(device)
    assert len(images) == batch
    return batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config on the CPU (a smoke test of this script)")
    parser.add_argument("--size", type=int, help="px, square (default 512; --tiny 32)")
    parser.add_argument(
        "--batch", type=int, help="images per training step and per sampling batch (default 32; --tiny 4)"
    )
    parser.add_argument("--steps", type=int, help="timed training steps and bare sampling steps (default 20; --tiny 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--sample-steps", type=int, default=25, help="DPM-Solver++ steps per image")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args()
    set_progress(False)  # no bars between the table's lines
    sys.path.insert(0, str(REPO / "tests"))  # tiny_sd: a test fixture, not part of the package
    from tiny_sd import build_sd_pipeline

    size = args.size or (32 if args.tiny else 512)
    batch = args.batch or (4 if args.tiny else 32)
    steps = args.steps or (3 if args.tiny else 20)
    if args.tiny:
        torch.set_num_threads(1)  # the tiny model gains nothing from threads; a shared CPU loses to them
    cuda = args.device == "cuda" or (args.device == "auto" and not args.tiny and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")

    config = dataclasses.replace(
        load_params(REPO / "params.yaml").finetune,
        image_size=size,
        batch_size=batch,
        checkpoint_every=0,
        ema_decay=0.0,
        gradient_checkpointing=False,
    )
    precision = resolve_mixed_precision(config, device)
    pipeline = build_sd_pipeline("tiny" if args.tiny else "sd15", size).to(device)
    unet = pipeline.unet
    shape = (batch, unet.config.in_channels, size // pipeline.vae_scale_factor, size // pipeline.vae_scale_factor)
    width = unet.config.cross_attention_dim
    millions = sum(p.numel() for p in unet.parameters()) / 1e6
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"{name}; {'tiny' if args.tiny else 'sd15'} preset, {size} px (latents {shape[2]}x{shape[3]}), "
        f"UNet {millions:.1f}M params, batch {batch}, precision {precision}, {steps} timed steps, "
        f"sampling {args.sample_steps} DPM-Solver++ steps at guidance {args.guidance}\n"
    )

    bf16 = precision == "bf16"
    _reset_peak(device)
    bare = BareRun(device=device, bf16=bf16, warmup=args.warmup, steps=steps)
    bare_train = bare_train_speed(unet, shape, width, bare)
    bare_train_peak = _peak_gib(device)
    _reset_peak(device)
    loop_train = loop_train_speed(pipeline, config, shape, device=device, warmup=args.warmup, steps=steps)
    loop_train_peak = _peak_gib(device)
    pipeline.unet.requires_grad_(False)
    _reset_peak(device)
    step_seconds = bare_sample_step_seconds(unet, shape, width, bare)
    bare_sample, bare_sample_peak = batch / (args.sample_steps * step_seconds), _peak_gib(device)
    piped = pipeline_sample_speed(
        pipeline, config, batch, device=device, steps=args.sample_steps, guidance=args.guidance
    )

    print("| work | ms/step | img/s | vs bare | peak CUDA GiB |")
    print("|---|---|---|---|---|")
    print(
        f"| bare UNet training step (forward, backward, AdamW), batch {batch} | {1000 * batch / bare_train:.1f} | "
        f"{bare_train:.1f} | 1.00 | {bare_train_peak} |"
    )
    print(
        f"| train_diffusion on latent_task (cached latents) | {1000 * batch / loop_train:.1f} | {loop_train:.1f} | "
        f"{loop_train / bare_train:.2f} | {loop_train_peak} |"
    )
    print(
        f"| bare UNet forward with CFG (batch {2 * batch}), {args.sample_steps} steps per image | "
        f"{1000 * step_seconds:.1f} | {bare_sample:.2f} | 1.00 | {bare_sample_peak} |"
    )
    print(
        f"| StableDiffusionPipeline via sample_latent_images, {args.sample_steps} DPM-Solver++ steps | "
        f"{1000 * batch / piped / args.sample_steps:.1f} | {piped:.2f} | {piped / bare_sample:.2f} | "
        f"{_peak_gib(device)} |"
    )


if __name__ == "__main__":
    main()
