"""Stage finetune: train the diffusion model on the real training scans of the target class."""

import logging

import numpy as np

from synthratio.config import load_params
from synthratio.data.ingest import load_split
from synthratio.diffusion.pixel import save_pipeline, train_pixel
from synthratio.runtime import open_live, setup, write_json

log = logging.getLogger("finetune")


def main() -> None:
    params = load_params()
    device = setup(params.runtime)
    config = params.finetune
    images, labels = load_split(params.paths.prepared, "train", config.image_size)
    target = np.asarray(images[labels == params.prepare.classes.index(config.target_class)])
    log.info("%s backend: %d real %s training scans at %dpx, %d steps of batch %d on %s",
             config.backend, len(target), config.target_class, config.image_size, config.steps, config.batch_size, device)
    with open_live(params.paths.live / "finetune") as live:
        result = train_pixel(target, config, device, live=live, progress=params.runtime.progress)
    save_pipeline(result.pipeline, params.paths.diffusion_model)
    tail = result.losses[-min(50, len(result.losses)):]
    write_json(params.paths.metrics / "finetune.json", {
        "final_loss": round(float(np.mean(tail)), 6),
        "steps": len(result.losses),
        "train_images": int(len(target)),
        "seconds": round(result.seconds, 1),
        "images_per_second": round(result.images_per_second, 1),
        "device": str(device),
    })


if __name__ == "__main__":
    main()
