"""Sampling from a trained model, one torch.Generator per image seed (as in NVlabs/edm's generate.py).

Each image's initial noise, and any noise a stochastic sampler adds on the way, comes from its own
`torch.Generator(device="cpu").manual_seed(seed)`, so an image depends only on its seed, the model,
the sampler and the step count: never on the batch size, on the other seeds in its batch, or on how many
processes share the work (`accelerate launch`: each process samples every world-th missing seed).

Two model folders (`synthratio.diffusion.pipelines`): a pixel `DDPMPipeline` (a UNet2DModel, optionally
class-conditional with the class list in `classes.json`) and a latent `StableDiffusionPipeline` (Rombach et
al. 2022), saved whole or as a LoRA adapter on its base pipeline, sampled at a prompt with classifier-free
guidance (Ho & Salimans 2022) and written as grayscale.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import logging as diffusers_logging
from PIL import Image

from synthratio.config import SAMPLERS, TIMESTEP_SPACINGS, GenerateConfig
from synthratio.diffusion.pipelines import load_pipeline
from synthratio.layout import CLASSES_FILE, synthetic_file
from synthratio.runtime import autocast, progress_bar, progress_shown, replace_folder

SETTINGS_FILE = "generate_settings.json"
# generate.sampler (one of config.SAMPLERS) -> its diffusers scheduler; make_sampler sets each one's options
SCHEDULERS: dict[str, type[SchedulerMixin]] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpmsolver++": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}
Postprocess = Callable[[np.ndarray, int], np.ndarray]


def make_sampler(
    name: str, training_scheduler_config: Mapping[str, Any], timestep_spacing: str = "trailing", *, clip_x0: bool = True
) -> SchedulerMixin:
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
    clip_x0=False turns the clipping off: VAE latents (scaled to unit variance) are not confined to [-1, 1].
    """
    if timestep_spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"generate.timestep_spacing={timestep_spacing!r}; expected one of {sorted(TIMESTEP_SPACINGS)}")
    if name not in SCHEDULERS:
        raise ValueError(f"generate.sampler={name!r}; expected one of {sorted(SAMPLERS)}")
    config = training_scheduler_config
    # Overrides go in as keywords: from_config drops dict keys listed in the config's _use_default_values.
    clip = {"clip_sample": clip_x0, "clip_sample_range": 1.0, "timestep_spacing": timestep_spacing}
    # Saharia et al. 2022's dynamic thresholding at a maximum of 1: a clip to [-1, 1]
    threshold = {"thresholding": clip_x0, "sample_max_value": 1.0, "timestep_spacing": timestep_spacing}
    options: dict[str, dict[str, Any]] = {
        "ddpm": clip,
        "ddim": clip,
        "dpmsolver++": {
            "algorithm_type": "dpmsolver++",
            "lambda_min_clipped": -5.1 if config.get("beta_schedule") == "squaredcos_cap_v2" else -float("inf"),
            **threshold,
        },
        "euler": {"timestep_spacing": timestep_spacing},
        "unipc": threshold,
    }
    return SCHEDULERS[name].from_config(config, **options[name])


def class_labels(model_dir: Path, unet: UNet2DModel, class_name: str | None) -> tuple[int | None, int | None]:
    """(label of `class_name`, label of the null class) of a model with classes.json, or (None, None) without
    one. The null class exists where the UNet has one class embedding more than classes.json lists: it was
    trained with finetune.label_dropout, and its label is len(classes)."""
    path = Path(model_dir) / CLASSES_FILE
    if not path.is_file():
        return None, None
    classes = json.loads(path.read_text())
    if class_name not in classes:
        raise ValueError(
            f"{path}: the model is conditioned on classes {classes}; class_name={class_name!r} is not one of them"
        )
    null_label = len(classes) if unet.config.num_class_embeds == len(classes) + 1 else None
    return classes.index(class_name), null_label


def sample_images(
    unet: UNet2DModel,
    sampler: SchedulerMixin,
    seeds: Sequence[int],
    *,
    inference_steps: int,
    device: torch.device,
    batch_size: int,
    class_label: int | None = None,
    null_label: int | None = None,
    guidance_scale: float = 1.0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (seed, uint8 (H, W) image) for every seed of a pixel UNet, sampling `batch_size` images at a time.

    Initial noise is drawn per image from its seed's CPU generator; samplers whose `step` adds noise get
    the list of per-image generators, which diffusers' `randn_tensor` draws from one image at a time.
    A class-conditional UNet gets `class_label` for every image. With `guidance_scale` > 1 the output is
    classifier-free guided (Ho & Salimans 2022): null + scale * (class - null), where null is the output at
    `null_label`, the class the UNet learned from dropped labels; one doubled batch per step.
    """
    guided = guidance_scale != 1
    if guided and (class_label is None or null_label is None):
        raise ValueError(
            f"guidance_scale={guidance_scale} needs a class-conditional UNet with a null class "
            f"(class_label={class_label}, null_label={null_label}); 1 samples without guidance"
        )
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    shape = (unet.config.in_channels, height, width)
    stochastic = "generator" in inspect.signature(sampler.step).parameters
    bar = progress_bar(total=len(seeds), desc="generate", unit="img")
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in chunk]
        noise = torch.stack([torch.randn(shape, generator=g) for g in generators])
        sampler.set_timesteps(inference_steps, device=device)
        sample = (noise * sampler.init_noise_sigma).to(device=device, dtype=unet.dtype)
        extra = {"generator": generators} if stochastic else {}
        labels = {}
        if class_label is not None:
            classes = torch.full((len(chunk),), class_label, device=device)
            # guided: the class half of a doubled batch, then the null half
            labels["class_labels"] = torch.cat([classes, torch.full_like(classes, null_label)]) if guided else classes
        with torch.no_grad():
            for t in sampler.timesteps:
                model_input = sampler.scale_model_input(sample, t)
                if guided:
                    conditional, unconditional = unet(model_input.repeat(2, 1, 1, 1), t, **labels).sample.chunk(2)
                    output = unconditional + guidance_scale * (conditional - unconditional)
                else:
                    output = unet(model_input, t, **labels).sample
                sample = sampler.step(output, t, sample, **extra).prev_sample
        pixels = ((sample.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        for seed, image in zip(chunk, pixels):
            yield seed, image[0]
        bar.update(len(chunk))
    bar.close()


def sample_latent_images(
    pipeline: StableDiffusionPipeline,
    sampler: SchedulerMixin,
    seeds: Sequence[int],
    *,
    prompt: str,
    inference_steps: int,
    guidance_scale: float,
    device: torch.device,
    batch_size: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (seed, uint8 (H, W) grayscale image) for every seed of a Stable Diffusion pipeline.

    Each image's initial latent (4, H/8, W/8) comes from its seed's CPU generator and goes in as `latents=`;
    the pipeline runs `sampler` with classifier-free guidance at `guidance_scale` (1 = off) and decodes with
    the VAE; the RGB output becomes gray as the rounded mean of its channels. On a GPU with bf16 the UNet and
    the VAE run in bf16 autocast (the latents between steps stay float32); there, kernels picked per batch
    size can move a pixel by rounding, while on the CPU an image is the same at every batch size.
    """
    pipeline.scheduler = sampler
    pipeline.set_progress_bar_config(disable=True)  # one bar over the images, below
    unet = pipeline.unet
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else size
    shape = (unet.config.in_channels, height, width)
    bar = progress_bar(total=len(seeds), desc="generate", unit="img")
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in chunk]
        latents = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device=device, dtype=unet.dtype)
        with torch.no_grad(), autocast(device):
            rgb = pipeline(
                prompt=[prompt] * len(chunk),
                num_inference_steps=inference_steps,
                guidance_scale=guidance_scale,
                latents=latents,
                generator=generators,
                output_type="np",
            ).images
        gray = (np.clip(rgb, 0.0, 1.0).mean(axis=-1) * 255.0).round().astype(np.uint8)
        yield from zip(chunk, gray)
        bar.update(len(chunk))
    bar.close()


def shard_seeds(seeds: Sequence[int], process_index: int, num_processes: int) -> list[int]:
    """The seeds one of `num_processes` processes samples: every num_processes-th, from its index."""
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index={process_index}; expected 0 <= index < num_processes={num_processes}")
    return list(seeds[process_index::num_processes])


@dataclass
class _Model:
    """A loaded model folder, ready to sample: its pipeline, the inference scheduler and, for a pixel model
    with classes.json, the class label to sample."""

    pipeline: DiffusionPipeline
    sampler: SchedulerMixin
    latent: bool  # a StableDiffusionPipeline, sampled at a prompt
    label: int | None
    null_label: int | None  # a pixel UNet's null class (trained with finetune.label_dropout), for guidance


def _load_model(
    model_dir: Path, device: torch.device, config: GenerateConfig, class_name: str | None, prompt: str | None
) -> _Model:
    pipeline = load_pipeline(model_dir, device)
    latent = isinstance(pipeline, StableDiffusionPipeline)
    if latent and not prompt:
        raise ValueError(
            f"{model_dir} holds a StableDiffusionPipeline: generate needs a prompt (finetune.prompts[0]); "
            f"got {prompt!r}"
        )
    label, null_label = (None, None) if latent else class_labels(model_dir, pipeline.unet, class_name)
    if config.class_guidance_scale != 1 and null_label is None:
        raise ValueError(
            f"params.yaml: generate.class_guidance_scale={config.class_guidance_scale}; {model_dir} has no null "
            "class to guide against (train it with finetune.class_conditional and label_dropout > 0), so use 1"
        )
    sampler = make_sampler(config.sampler, pipeline.scheduler.config, config.timestep_spacing, clip_x0=not latent)
    return _Model(pipeline=pipeline, sampler=sampler, latent=latent, label=label, null_label=null_label)


def _folder_digest(folder: Path) -> str:
    """sha256 over the relative paths and contents of every file in `folder`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _settings(
    model_dir: Path,
    model: _Model,
    config: GenerateConfig,
    *,
    class_name: str | None,
    prompt: str | None,
    settings_extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """What the images depend on: a staging folder left by a run with other settings is not resumed."""
    settings: dict[str, Any] = {
        "model_sha256": _folder_digest(model_dir),
        "sampler": config.sampler,
        "timestep_spacing": config.timestep_spacing,
        "inference_steps": config.inference_steps,
    }
    if model.latent:
        settings |= {"prompt": prompt, "guidance_scale": config.guidance_scale}
    if model.label is not None:
        settings["class_name"] = class_name
    if model.null_label is not None:
        settings["class_guidance_scale"] = config.class_guidance_scale
    if settings_extra:
        settings["extra"] = dict(settings_extra)
    return settings


def _prepare_staging(staging: Path, settings: dict[str, Any], seeds: Sequence[int]) -> None:
    """Make `staging` hold only finished images of `seeds` made with `settings` (other files are deleted)."""
    settings_path = staging / SETTINGS_FILE
    if staging.is_dir() and not (settings_path.is_file() and json.loads(settings_path.read_text()) == settings):
        shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    settings_path.write_text(json.dumps(settings, indent=1))
    wanted = {synthetic_file(staging, seed).name for seed in seeds}
    for path in staging.iterdir():
        if path.name not in wanted and path.name != SETTINGS_FILE:
            path.unlink()


def _missing_seeds(staging: Path, seeds: Sequence[int]) -> list[int]:
    return [seed for seed in seeds if not synthetic_file(staging, seed).is_file()]


def _process_device(state: PartialState, device: torch.device) -> torch.device:
    """Under `accelerate launch` with several processes, each process's own device of `device`'s type."""
    return state.device if state.num_processes > 1 and state.device.type == device.type else device


def _sample(
    model: _Model, seeds: Sequence[int], config: GenerateConfig, device: torch.device, prompt: str | None
) -> Iterator[tuple[int, np.ndarray]]:
    if model.latent:
        return sample_latent_images(
            model.pipeline,
            model.sampler,
            seeds,
            prompt=prompt,
            inference_steps=config.inference_steps,
            guidance_scale=config.guidance_scale,
            device=device,
            batch_size=config.batch_size,
        )
    return sample_images(
        model.pipeline.unet,
        model.sampler,
        seeds,
        inference_steps=config.inference_steps,
        device=device,
        batch_size=config.batch_size,
        class_label=model.label,
        null_label=model.null_label,
        guidance_scale=config.class_guidance_scale,
    )


def _write_images(images: Iterator[tuple[int, np.ndarray]], staging: Path, postprocess: Postprocess | None) -> None:
    """Write each (seed, image), after `postprocess`, as its PNG in `staging`: through a temporary name and a
    rename, so a killed run leaves finished images only."""
    for seed, image in images:
        if postprocess is not None:
            image = postprocess(image, seed)
            if image.dtype != np.uint8 or image.ndim != 2:
                raise ValueError(
                    f"generate postprocess returned {image.dtype} {image.shape} for seed {seed}; expected uint8 (H, W)"
                )
        path = synthetic_file(staging, seed)
        part = path.with_name(f"{path.name}.tmp")
        Image.fromarray(image).save(part, format="PNG")
        part.replace(path)


def _publish(staging: Path, out_dir: Path) -> None:
    """Swap the complete `staging` folder in for `out_dir`, without its settings file."""
    (staging / SETTINGS_FILE).unlink()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    replace_folder(staging, out_dir)
    with contextlib.suppress(OSError):  # an emptied staging parent of our own making; never a non-empty one
        staging.parent.rmdir()


def generate_to_folder(
    model_dir: Path,
    out_dir: Path,
    seeds: Sequence[int],
    *,
    config: GenerateConfig,
    device: torch.device,
    staging: Path | None = None,
    class_name: str | None = None,
    prompt: str | None = None,
    postprocess: Postprocess | None = None,
    settings_extra: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write one `{seed:06d}.png` (mode L) per seed into `out_dir`; return their paths in seed order.

    `model_dir` holds a DDPMPipeline (sampled at `class_name` when it has classes.json, guided with
    `config.class_guidance_scale` when it also learned a null class) or a
    StableDiffusionPipeline (sampled at `prompt` with `config.guidance_scale`). `postprocess(image, seed)`
    changes each uint8 (H, W) image before it is written; describe it in `settings_extra`, which joins the
    settings that a resumed run must match.

    Images go to `staging` (default: the sibling `<out_dir>.partial/`; on the same file system) and the
    folder is renamed to `out_dir` once complete, so `out_dir` never holds a partial set. A staging folder
    left by a killed run with the same settings is resumed: its finished images are kept and only the
    missing seeds sampled. DVC deletes a stage's outputs before rerunning it, so the generate stage keeps
    `staging` outside them. Under `accelerate launch` each process samples its share of the missing seeds
    into the shared staging folder and the main process renames it: the files are those of one process.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
        raise ValueError(
            f"generate: seeds must be distinct and >= 0; got {len(seeds)} seeds from {min(seeds, default=None)}"
        )
    state = PartialState(cpu=device.type == "cpu")  # cpu: several CPU processes (gloo) under a launcher
    device = _process_device(state, device)
    if not progress_shown():  # diffusers' own loading bar follows ours: no carriage returns in log files
        diffusers_logging.disable_progress_bar()
    model = _load_model(model_dir, device, config, class_name, prompt)
    settings = _settings(model_dir, model, config, class_name=class_name, prompt=prompt, settings_extra=settings_extra)
    staging = Path(staging) if staging is not None else out_dir.with_name(f"{out_dir.name}.partial")
    if state.is_main_process:
        staging.parent.mkdir(parents=True, exist_ok=True)
        _prepare_staging(staging, settings, seeds)
    state.wait_for_everyone()
    mine = shard_seeds(_missing_seeds(staging, seeds), state.process_index, state.num_processes)
    _write_images(_sample(model, mine, config, device, prompt), staging, postprocess)
    state.wait_for_everyone()
    if state.is_main_process:
        _publish(staging, out_dir)
    state.wait_for_everyone()
    return [synthetic_file(out_dir, seed) for seed in seeds]
