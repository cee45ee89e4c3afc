"""Stage finetune: train the diffusion model (pixel or latent backend) on the real training scans."""

import contextlib
import shutil

import numpy as np
from accelerate import PartialState

from synthratio.config import load_params
from synthratio.data.ingest import load_split
from synthratio.diffusion.pixel import save_pipeline, train_pixel
from synthratio.diffusion.training import resolve_mixed_precision
from synthratio.runtime import open_live, setup, write_json


def main() -> None:
    params = load_params()
    device = setup(params.runtime)
    config, classes = params.finetune, params.prepare.classes
    images, labels = load_split(params.paths.prepared, "train", config.image_size)
    if config.backend == "pixel":
        train = train_pixel
    else:
        from synthratio.diffusion.latent import train_latent as train  # imports peft and transformers
    model_dir = params.paths.diffusion_model
    # outside the DVC output, which DVC deletes before it reruns the stage: a killed run resumes from here
    checkpoints = model_dir.with_name(f"{model_dir.name}.checkpoints")
    # Under a launcher every process trains; one logs, saves and writes (two dvclive loggers or two
    # pipeline saves racing on the same files corrupt them).
    main_process = PartialState(cpu=device.type == "cpu").is_main_process  # as train_diffusion's Accelerator
    with open_live(params.paths.live / "finetune") if main_process else contextlib.nullcontext() as live:
        result = train(images, labels, classes, config, device, checkpoints, live, params.runtime.progress)
    if not main_process:
        return
    save_pipeline(result.pipeline, model_dir, classes=result.classes)
    shutil.rmtree(checkpoints, ignore_errors=True)
    pool = len(images) if config.class_conditional else int((labels == classes.index(config.target_class)).sum())
    tail = result.losses[-min(50, len(result.losses)):]
    write_json(params.paths.metrics / "finetune.json", {
        "final_loss": round(float(np.mean(tail)), 6),
        "steps": len(result.losses),
        "resumed_from_step": result.resumed_from_step,
        "train_images": min(pool, config.max_images) if config.max_images else pool,
        "seconds": round(result.seconds, 1),
        "images_per_second": round(result.images_per_second, 1),
        "device": str(device),
        "precision": resolve_mixed_precision(config, device),
    })


if __name__ == "__main__":
    main()
