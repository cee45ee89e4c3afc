"""A generator's folder: how the finetune stage saves a trained pipeline and the generate stage loads it.

Two kinds of folder: a whole diffusers pipeline, whose model_index.json names its class (a pixel
`DDPMPipeline` or a latent `StableDiffusionPipeline`), or a LoRA adapter alone, in diffusers' LoRA format, with
a record of the base pipeline it belongs to and the training scheduler (`save_lora`): a few MB instead of the
3.4 GB of a whole SD 1.5 pipeline; `load_lora_pipeline` rebuilds the pipeline from the base and the adapter.
Either may hold classes.json (the class list of a class-conditional pipeline) and training_patients.json (the
patient groups whose scans it learned). Nothing here imports a training loop: generate reads folders only.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, DiffusionPipeline, StableDiffusionPipeline
from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE

from synthratio.layout import CLASSES_FILE, TRAINING_PATIENTS_FILE
from synthratio.runtime import replace_folder

PIPELINES: dict[str, type[DiffusionPipeline]] = {
    "DDPMPipeline": DDPMPipeline,
    "StableDiffusionPipeline": StableDiffusionPipeline,
}
LORA_FILE = "lora_base.json"  # beside diffusers' LORA_WEIGHT_NAME_SAFE: the adapter's base pipeline and scheduler


class PretrainedUnavailableError(OSError):
    """finetune.pretrained names a hub model that cannot be fetched here."""


def load_pretrained(pretrained: str) -> StableDiffusionPipeline:
    """`StableDiffusionPipeline.from_pretrained(pretrained)` (hub id or local folder), without safety checker.

    Raises PretrainedUnavailableError naming finetune.pretrained when a hub id cannot be fetched (no
    network, HF_HUB_OFFLINE, not in the local cache).
    """
    try:
        return StableDiffusionPipeline.from_pretrained(pretrained, safety_checker=None, requires_safety_checker=False)
    except OSError as error:
        if Path(pretrained).expanduser().is_dir():
            raise
        raise PretrainedUnavailableError(
            f"params.yaml: finetune.pretrained={pretrained!r} could not be loaded from the Hugging Face hub or its "
            f"cache (no network, HF_HUB_OFFLINE set, or not downloaded: {error}). On a machine with network run "
            f"`hf download {pretrained} --local-dir <folder>`, copy the folder here and set finetune.pretrained to it"
        ) from error


def save_pipeline(
    pipeline: DiffusionPipeline,
    out_dir: Path,
    *,
    classes: Sequence[str] = (),
    training_patients: Sequence[int] | None = None,
    pretrained: str = "",
) -> None:
    """Write `pipeline` in diffusers' format (safetensors) to `out_dir`, atomically replacing it; a
    class-conditional pipeline also gets its class list as classes.json (a JSON list; label i = classes[i]),
    and `training_patients` (the patient groups of the scans it learned from) go to training_patients.json,
    so anyone can check which patients a generator saw.

    A pipeline whose UNet carries LoRA adapters (latent backend, lora_rank > 0) is written as the adapters
    alone, with `pretrained`, the base pipeline they belong to (`save_lora`)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        if getattr(getattr(pipeline, "unet", None), "peft_config", None):
            save_lora(pipeline, staging, pretrained)
        else:
            pipeline.save_pretrained(staging, safe_serialization=True)
        if classes:
            (staging / CLASSES_FILE).write_text(json.dumps(list(classes)) + "\n")
        if training_patients is not None:
            patients = sorted(int(p) for p in set(training_patients))
            (staging / TRAINING_PATIENTS_FILE).write_text(json.dumps(patients) + "\n")
        replace_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def save_lora(pipeline: StableDiffusionPipeline, folder: Path, pretrained: str) -> None:
    """Write the LoRA adapters of `pipeline.unet` into `folder` as diffusers' train_text_to_image_lora.py does
    (`save_lora_weights`: LORA_WEIGHT_NAME_SAFE, with the adapter's LoraConfig as metadata) and LORA_FILE: the
    base pipeline `pretrained` (finetune.pretrained, as given) and the training scheduler's config."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict  # here: only a LoRA run needs peft

    if not pretrained:
        raise ValueError(
            "save_lora: pretrained is empty; expected finetune.pretrained, the base pipeline the adapter belongs to"
        )
    unet = pipeline.unet
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    type(pipeline).save_lora_weights(
        folder,
        unet_lora_layers=layers,
        safe_serialization=True,
        unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(),
    )
    record = {"pretrained": pretrained, "scheduler": json.loads(pipeline.scheduler.to_json_string())}
    (Path(folder) / LORA_FILE).write_text(json.dumps(record, indent=1) + "\n")


def load_lora_pipeline(folder: Path) -> StableDiffusionPipeline:
    """The pipeline `save_lora` wrote to `folder`: its base (`load_pretrained`), the training scheduler, and
    the UNet adapter fused into the UNet's weights."""
    folder = Path(folder)
    record = json.loads((folder / LORA_FILE).read_text())
    pipeline = load_pretrained(record["pretrained"])
    pipeline.scheduler = DDPMScheduler.from_config(record["scheduler"])
    pipeline.load_lora_weights(folder, weight_name=LORA_WEIGHT_NAME_SAFE, use_safetensors=True)
    # Fused (W + (alpha / r) B A, once) and unloaded: a plain UNet, as fast as the base. Sampling runs the UNet
    # twice per step (guidance), and unfused adapters would add their two matmuls per projection to every call;
    # the images differ from the unfused adapter's by float rounding only.
    pipeline.fuse_lora()
    pipeline.unload_lora_weights()
    return pipeline


def load_pipeline(model_dir: Path, device: torch.device) -> DiffusionPipeline:
    """Load the pipeline saved in `model_dir` onto `device`: a whole pipeline, whose model_index.json names
    the class, or a LoRA adapter with the record of its base pipeline (`load_lora_pipeline`)."""
    model_dir = Path(model_dir)
    index = model_dir / "model_index.json"
    if not index.is_file():
        if (model_dir / LORA_FILE).is_file():
            return load_lora_pipeline(model_dir).to(device)
        raise FileNotFoundError(
            f"{model_dir}: no diffusers pipeline there (neither model_index.json nor a LoRA "
            f"adapter's {LORA_FILE}); run the finetune stage first"
        )
    class_name = json.loads(index.read_text()).get("_class_name")
    if class_name not in PIPELINES:
        raise ValueError(f"{index}: _class_name={class_name!r}; expected one of {sorted(PIPELINES)}")
    return PIPELINES[class_name].from_pretrained(model_dir).to(device)
