"""Sampling from a trained model, one torch.Generator per image seed (as in NVlabs/edm's generate.py).

Each image's initial noise, and any noise a stochastic sampler adds on the way, comes from its own
`torch.Generator(device="cpu").manual_seed(seed)`, so an image depends only on its seed, the model,
the sampler and the step count: never on the batch size, on the other seeds in its batch, or on how many
processes share the work (`accelerate launch`: each process samples every world-th missing seed).

Two model folders (`synthratio.diffusion.pipelines`): a pixel `DDPMPipeline` (a UNet2DModel, optionally
class-conditional with the class list in `classes.json`) and a latent `StableDiffusionPipeline` (Rombach et
al. 2022), saved whole or as a LoRA adapter on its base pipeline, sampled at a prompt with classifier-free
guidance (Ho & Salimans 2022) and written as grayscale.

generate_synthetic writes a whole set, `<CLASS>/` folders beside the sampler they were drawn with (`scheduler/`,
diffusers' save_pretrained; load_sampler reads it back) and `sampling.json`, swapped in by one rename.
"""

from __future__ import annotations

import dataclasses
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
from diffusers.schedulers.scheduling_utils import SCHEDULER_CONFIG_NAME, SchedulerMixin
from diffusers.utils import logging as diffusers_logging
from PIL import Image

from synthratio.config import SAMPLERS, TIMESTEP_SPACINGS, GenerateConfig
from synthratio.data.synthetic import NOT_CLASSES, SAMPLING_FILE, SCHEDULER_FOLDER
from synthratio.diffusion.pipelines import load_pipeline
from synthratio.layout import CLASSES_FILE, synthetic_file
from synthratio.runtime import autocast, progress_bar, progress_shown, rate, replace_folder

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
    prompt: str | None
    label: int | None = None
    null_label: int | None = None  # a pixel UNet's null class (trained with finetune.label_dropout), for guidance


def _load_model(model_dir: Path, device: torch.device, config: GenerateConfig, prompt: str | None) -> _Model:
    pipeline = load_pipeline(model_dir, device)
    latent = isinstance(pipeline, StableDiffusionPipeline)
    if latent and not prompt:
        raise ValueError(
            f"{model_dir} holds a StableDiffusionPipeline: generate needs a prompt (finetune.prompts[0]); "
            f"got {prompt!r}"
        )
    sampler = make_sampler(config.sampler, pipeline.scheduler.config, config.timestep_spacing, clip_x0=not latent)
    return _Model(pipeline=pipeline, sampler=sampler, latent=latent, prompt=prompt)


def _at_class(model: _Model, model_dir: Path, config: GenerateConfig, class_name: str) -> _Model:
    """`model` set to sample `class_name` (a pixel model with classes.json; any other ignores it)."""
    label, null_label = (None, None) if model.latent else class_labels(model_dir, model.pipeline.unet, class_name)
    if config.class_guidance_scale != 1 and null_label is None:
        raise ValueError(
            f"params.yaml: generate.class_guidance_scale={config.class_guidance_scale}; {model_dir} has no null "
            "class to guide against (train it with finetune.class_conditional and label_dropout > 0), so use 1"
        )
    return dataclasses.replace(model, label=label, null_label=null_label)


def _folder_digest(folder: Path) -> str:
    """sha256 over the relative paths and contents of every file in `folder`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _settings(
    model_sha256: str,
    model: _Model,
    config: GenerateConfig,
    *,
    class_name: str,
    settings_extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """What the images depend on: a staging folder left by a run with other settings is not resumed."""
    settings: dict[str, Any] = {
        "model_sha256": model_sha256,
        "sampler": config.sampler,
        "timestep_spacing": config.timestep_spacing,
        "inference_steps": config.inference_steps,
    }
    if model.latent:
        settings |= {"prompt": model.prompt, "guidance_scale": config.guidance_scale}
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


def _check_seeds(seeds: Sequence[int]) -> None:
    if len(set(seeds)) != len(seeds) or any(seed < 0 for seed in seeds):
        raise ValueError(
            f"generate: seeds must be distinct and >= 0; got {len(seeds)} seeds from {min(seeds, default=None)}"
        )


def _start(device: torch.device) -> tuple[PartialState, torch.device]:
    """This process's accelerate state and device; under `accelerate launch` with several processes, each
    process's own device of `device`'s type."""
    state = PartialState(cpu=device.type == "cpu")  # cpu: several CPU processes (gloo) under a launcher
    if state.num_processes > 1 and state.device.type == device.type:
        device = state.device
    if not progress_shown():  # diffusers' own loading bar follows ours: no carriage returns in log files
        diffusers_logging.disable_progress_bar()
    return state, device


def _sample(
    model: _Model, seeds: Sequence[int], config: GenerateConfig, device: torch.device
) -> Iterator[tuple[int, np.ndarray]]:
    if model.latent:
        return sample_latent_images(
            model.pipeline,
            model.sampler,
            seeds,
            prompt=model.prompt,
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


def _draw(
    model: _Model,
    staging: Path,
    seeds: Sequence[int],
    settings: dict[str, Any],
    *,
    config: GenerateConfig,
    device: torch.device,
    state: PartialState,
    postprocess: Postprocess | None,
) -> int:
    """Sample the seeds that `staging` lacks into it, each process its share; return how many it lacked."""
    if state.is_main_process:
        staging.parent.mkdir(parents=True, exist_ok=True)
        _prepare_staging(staging, settings, seeds)
    state.wait_for_everyone()
    missing = _missing_seeds(staging, seeds)
    mine = shard_seeds(missing, state.process_index, state.num_processes)
    _write_images(_sample(model, mine, config, device), staging, postprocess)
    state.wait_for_everyone()
    return len(missing)


@dataclass(frozen=True)
class ClassDraw:
    """One class folder of a set of synthetic scans: the class (the folder's name; a class-conditional model
    samples it), its image seeds and an optional `postprocess(image, seed)`, described by `settings_extra`
    (which joins the resume fingerprint and the class's entry in sampling.json)."""

    name: str
    seeds: Sequence[int]
    postprocess: Postprocess | None = None
    settings_extra: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SyntheticSet:
    """What generate_synthetic wrote."""

    folder: Path
    files: dict[str, list[Path]]  # per class, in seed order
    sampler: SchedulerMixin  # the scheduler the scans were drawn with, saved in folder/scheduler/
    inference_steps: int
    sampled: int  # images this call sampled, over every process: fewer than all when it resumed a killed run

    def summary(self, seconds: float) -> str:
        """One line: what was drawn, with which sampler, how fast."""
        total = sum(len(files) for files in self.files.values())
        notes = [", ".join(f"{len(files)} {name}" for name, files in self.files.items())] if len(self.files) > 1 else []
        notes += [f"{total - self.sampled} resumed"] if self.sampled < total else []
        what = (f"{self.sampled} of {total}" if self.sampled < total else f"{total}") + (
            f" {next(iter(self.files))} scans" if len(self.files) == 1 else " scans"
        )
        drawn = f"drew {what}" + (f" ({'; '.join(notes)})" if notes else "")
        speed = f"{rate(self.sampled / seconds)} img/s" if self.sampled and seconds > 0 else "nothing left to sample"
        steps = f"{self.inference_steps} {self.sampler.config.timestep_spacing} steps"
        return f"{drawn} with {type(self.sampler).__name__}, {steps}, {speed}"


def _record(
    model_dir: Path, model_sha256: str, models: Mapping[str, _Model], draws: Sequence[ClassDraw], config: GenerateConfig
) -> dict[str, Any]:
    """sampling.json: the sampling call's settings that scheduler/scheduler_config.json does not hold."""
    model = next(iter(models.values()))
    record: dict[str, Any] = {
        "sampler": config.sampler,  # params' name of the scheduler class (and algorithm) in scheduler/
        "inference_steps": config.inference_steps,
        "batch_size": config.batch_size,  # no image depends on it, but on a GPU in bf16 where a pixel may move
        "first_seed": config.first_seed,
        "num_images": config.num_images,
        "noise_injection": config.noise_injection,  # each class's postprocess settings are under classes
        "model": str(model_dir),
        "model_sha256": model_sha256,
    }
    if model.latent:
        record |= {"prompt": model.prompt, "guidance_scale": config.guidance_scale}
    else:
        record["class_guidance_scale"] = config.class_guidance_scale
    record["classes"] = {
        draw.name: {"label": models[draw.name].label, "seeds": list(draw.seeds), **(draw.settings_extra or {})}
        for draw in draws
    }
    return record


def generate_synthetic(
    model_dir: Path,
    out_dir: Path,
    draws: Sequence[ClassDraw],
    *,
    config: GenerateConfig,
    device: torch.device,
    staging: Path | None = None,
    prompt: str | None = None,
) -> SyntheticSet:
    """Write a self-describing set of synthetic scans to `out_dir`: `<CLASS>/{seed:06d}.png` (mode L) per draw,
    `scheduler/` (the sampler, by its `save_pretrained`: load it with load_sampler or
    `<Class>.from_pretrained(out_dir, subfolder="scheduler")`) and `sampling.json` (_record).

    `model_dir` holds a DDPMPipeline (sampled at each draw's class when it has classes.json, guided with
    `config.class_guidance_scale` when it also learned a null class) or a StableDiffusionPipeline (sampled at
    `prompt` with `config.guidance_scale`). A draw's `postprocess(image, seed)` changes each uint8 (H, W) image
    before it is written; its `settings_extra` describes it.

    The whole set is built in `staging` (default: the sibling `<out_dir>.partial/`; on the same file system)
    and swapped in by one rename, so `out_dir` is either absent, an old complete set or the new one. A killed
    run's class folders are resumed when their settings (model, sampler, steps, class, settings_extra...)
    match: their finished images are kept and only the missing seeds sampled; anything else in `staging` is
    deleted first. Under `accelerate launch` each process samples its share of the missing seeds into the
    shared staging folder and the main process writes the record and renames it: the files are those of one
    process.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    names = [draw.name for draw in draws]
    if not names or len(set(names)) != len(names) or set(names) & NOT_CLASSES:
        raise ValueError(
            f"generate: classes {names}; expected one or more distinct names, none of {sorted(NOT_CLASSES)}"
        )
    for draw in draws:
        _check_seeds(draw.seeds)
    state, device = _start(device)
    loaded = _load_model(model_dir, device, config, prompt)
    models = {name: _at_class(loaded, model_dir, config, name) for name in names}  # every refusal before any file
    digest = _folder_digest(model_dir)
    staging = Path(staging) if staging is not None else out_dir.with_name(f"{out_dir.name}.partial")
    if state.is_main_process and staging.is_dir():
        for path in staging.iterdir():  # another run's classes, a record written before a kill
            if path.name in names:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
    sampled = 0
    for draw in draws:
        model = models[draw.name]
        settings = _settings(digest, model, config, class_name=draw.name, settings_extra=draw.settings_extra)
        sampled += _draw(
            model,
            staging / draw.name,
            draw.seeds,
            settings,
            config=config,
            device=device,
            state=state,
            postprocess=draw.postprocess,
        )
    if state.is_main_process:
        for name in names:
            (staging / name / SETTINGS_FILE).unlink()
        loaded.sampler.save_pretrained(staging / SCHEDULER_FOLDER)
        (staging / SAMPLING_FILE).write_text(json.dumps(_record(model_dir, digest, models, draws, config), indent=1))
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        replace_folder(staging, out_dir)
    state.wait_for_everyone()
    return SyntheticSet(
        folder=out_dir,
        files={draw.name: [synthetic_file(out_dir / draw.name, seed) for seed in draw.seeds] for draw in draws},
        sampler=loaded.sampler,
        inference_steps=config.inference_steps,
        sampled=sampled,
    )


def load_sampler(folder: Path) -> SchedulerMixin:
    """The scheduler the set of synthetic scans in `folder` was drawn with (its `scheduler/` subfolder)."""
    path = Path(folder) / SCHEDULER_FOLDER / SCHEDULER_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no sampler saved beside these synthetic scans (rerun generate)")
    known = {scheduler.__name__: scheduler for scheduler in SCHEDULERS.values()}
    name = json.loads(path.read_text()).get("_class_name")
    if name not in known:
        raise ValueError(f"{path}: _class_name={name!r}; expected one of {sorted(known)}")
    return known[name].from_pretrained(folder, subfolder=SCHEDULER_FOLDER)
