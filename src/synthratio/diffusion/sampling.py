"""Sampling from a trained pixel UNet, one torch.Generator per image seed (as in NVlabs/edm's generate.py).

Each image's initial noise, and any noise a stochastic sampler adds on the way, comes from its own
`torch.Generator(device="cpu").manual_seed(seed)`, so an image depends only on its seed, the model,
the sampler and the step count: never on the batch size or on the other seeds in its batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image
from tqdm.auto import tqdm

from synthratio.config import TIMESTEP_SPACINGS, GenerateConfig
from synthratio.diffusion.pixel import replace_folder

SAMPLERS = ("ddpm", "ddim", "dpmsolver++", "euler", "unipc")
SETTINGS_FILE = "generate_settings.json"


def make_sampler(name: str, training_scheduler_config: Mapping[str, Any], timestep_spacing: str = "trailing") -> SchedulerMixin:
    """An inference scheduler on the training noise schedule.

    timestep_spacing "trailing" starts sampling at t = T-1, where training put (almost) no signal left; the
    "leading" spacing of older configs starts below it, so pure noise meets a model that expects some
    signal and the images drift in brightness (Lin et al. 2024, "Common Diffusion Noise Schedules and
    Sample Steps are Flawed"). With trailing spacing, use v-prediction: an epsilon model cannot recover
    x_0 at t = T-1.

    ddpm: ancestral sampling (Ho et al. 2020); ddim: eta=0 (Song et al. 2021); dpmsolver++: multistep
    2nd order (Lu et al. 2022); euler: Karras et al. 2022, Algorithm 1; unipc: Zhao et al. 2023.
    Every sampler but euler (which has no option for it) clips its x_0 estimate to the data range [-1, 1]
    as Ho et al. 2020 do; without it an epsilon model's x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)
    blows up at the noisiest steps of the cosine schedule (alpha_bar(T-1) ~ 2e-9) and the images saturate.
    DPM-Solver++ also clips lambda at -5.1 on the cosine schedule, which otherwise returns noise.
    """
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"generate.timestep_spacing={timestep_spacing!r}; expected one of {sorted(TIMESTEP_SPACINGS)}")
    config = training_scheduler_config
    # Overrides go in as keywords: from_config drops dict keys listed in the config's _use_default_values.
    clip = {"clip_sample": True, "clip_sample_range": 1.0, "timestep_spacing": timestep_spacing}
    threshold = {"thresholding": True, "sample_max_value": 1.0, "timestep_spacing": timestep_spacing}  # Saharia et al. 2022 at max 1: a clip to [-1, 1]
    if name == "ddpm":
        return DDPMScheduler.from_config(config, **clip)
    if name == "ddim":
        return DDIMScheduler.from_config(config, **clip)
    if name == "dpmsolver++":
        cosine = config.get("beta_schedule") == "squaredcos_cap_v2"
        return DPMSolverMultistepScheduler.from_config(
            config,
            algorithm_type="dpmsolver++",
            lambda_min_clipped=-5.1 if cosine else -float("inf"),
            **threshold,
        )
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config, timestep_spacing=timestep_spacing)
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(config, **threshold)
    raise ValueError(f"generate.sampler={name!r}; expected one of {sorted(SAMPLERS)}")


def load_pipeline(model_dir: Path, device: torch.device) -> DDPMPipeline:
    """Load a DDPMPipeline saved by `save_pipeline` (or any diffusers DDPM folder) onto `device`."""
    model_dir = Path(model_dir)
    if not (model_dir / "model_index.json").is_file():
        raise FileNotFoundError(f"{model_dir}: no diffusers pipeline there (model_index.json missing); run the finetune stage first")
    return DDPMPipeline.from_pretrained(model_dir).to(device)


def sample_images(
    unet: UNet2DModel,
    sampler: SchedulerMixin,
    seeds: Sequence[int],
    inference_steps: int,
    device: torch.device,
    batch_size: int,
    progress: bool = True,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (seed, uint8 (H, W) image) for every seed, sampling `batch_size` images at a time.

    Initial noise is drawn per image from its seed's CPU generator; samplers whose `step` adds noise get
    the list of per-image generators, which diffusers' `randn_tensor` draws from one image at a time.
    """
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    shape = (unet.config.in_channels, height, width)
    stochastic = "generator" in inspect.signature(sampler.step).parameters
    bar = tqdm(total=len(seeds), desc="generate", unit="img", disable=not progress)
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in chunk]
        noise = torch.stack([torch.randn(shape, generator=g) for g in generators])
        sampler.set_timesteps(inference_steps, device=device)
        sample = (noise * sampler.init_noise_sigma).to(device=device, dtype=unet.dtype)
        extra = {"generator": generators} if stochastic else {}
        with torch.no_grad():
            for t in sampler.timesteps:
                output = unet(sampler.scale_model_input(sample, t), t).sample
                sample = sampler.step(output, t, sample, **extra).prev_sample
        pixels = ((sample.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        for seed, image in zip(chunk, pixels):
            yield seed, image[0]
        bar.update(len(chunk))
    bar.close()


def _folder_digest(folder: Path) -> str:
    """sha256 over the relative paths and contents of every file in `folder`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _image_name(seed: int) -> str:
    return f"{seed:06d}.png"


def _prepare_staging(staging: Path, settings: dict[str, Any], seeds: Sequence[int]) -> set[int]:
    """Make `staging` hold only finished images of `seeds` made with `settings`; return those seeds."""
    settings_path = staging / SETTINGS_FILE
    if staging.is_dir() and not (settings_path.is_file() and json.loads(settings_path.read_text()) == settings):
        shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(settings, indent=1))
    wanted = {_image_name(seed): seed for seed in seeds}
    done = set()
    for path in staging.iterdir():
        if path.name in wanted:
            done.add(wanted[path.name])
        elif path.name != SETTINGS_FILE:
            path.unlink()
    return done


def generate_to_folder(
    model_dir: Path,
    out_dir: Path,
    seeds: Sequence[int],
    config: GenerateConfig,
    device: torch.device,
    progress: bool = True,
    staging: Path | None = None,
) -> list[Path]:
    """Write one `{seed:06d}.png` (mode L) per seed into `out_dir`; return their paths in seed order.

    Images go to `staging` (default: the sibling `<out_dir>.partial/`; on the same file system) and the
    folder is renamed to `out_dir` once complete, so `out_dir` never holds a partial set. A staging folder
    left by a killed run with the same model, sampler and step count is resumed: its finished images are
    kept and only the missing seeds sampled. DVC deletes a stage's outputs before rerunning it, so the
    generate stage keeps `staging` outside them.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
        raise ValueError(f"generate: seeds must be distinct and >= 0; got {len(seeds)} seeds from {min(seeds, default=None)}")
    pipeline = load_pipeline(model_dir, device)
    sampler = make_sampler(config.sampler, pipeline.scheduler.config, config.timestep_spacing)
    settings = {
        "model_sha256": _folder_digest(model_dir),
        "sampler": config.sampler,
        "timestep_spacing": config.timestep_spacing,
        "inference_steps": config.inference_steps,
    }
    staging = Path(staging) if staging is not None else out_dir.with_name(f"{out_dir.name}.partial")
    staging.parent.mkdir(parents=True, exist_ok=True)
    done = _prepare_staging(staging, settings, seeds)
    missing = [seed for seed in seeds if seed not in done]
    for seed, image in sample_images(pipeline.unet, sampler, missing, config.inference_steps, device, config.batch_size, progress):
        part = staging / f"{_image_name(seed)}.tmp"
        Image.fromarray(image).save(part, format="PNG")
        part.replace(staging / _image_name(seed))
    (staging / SETTINGS_FILE).unlink()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    replace_folder(staging, out_dir)
    with contextlib.suppress(OSError):  # an emptied staging parent of our own making; never a non-empty one
        staging.parent.rmdir()
    return [out_dir / _image_name(seed) for seed in seeds]
