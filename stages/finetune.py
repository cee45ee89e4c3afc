"""Stage finetune@keep-generator: train the diffusion model (pixel or latent backend) from seed `generator`
(weight init, data order, training noise) on the real training scans of cohort `keep`, the patients that
regime's classifiers may see, and no others."""

import contextlib
import shutil
from dataclasses import replace

from synthratio.config import check_generator, load_params, stage_arguments
from synthratio.runtime import run_stage


def main() -> str | None:
    args = stage_arguments(__doc__)
    params = load_params()
    check_generator(params, args.generator)
    # imported once params.yaml is read and checked: torch, diffusers and sklearn take seconds to import
    import numpy as np
    from accelerate import PartialState

    from synthratio.data.cohort import cohort_of
    from synthratio.diffusion.pipelines import save_pipeline
    from synthratio.diffusion.pixel import train_pixel
    from synthratio.diffusion.training import resolve_mixed_precision, training_rows
    from synthratio.layout import generator_files
    from synthratio.runtime import open_live, rate, setup, write_metrics

    device = setup(params.runtime)
    config, classes = replace(params.finetune, seed=args.generator), params.prepare.classes
    cohort = cohort_of(params, args.keep, size=config.image_size)
    if config.backend == "pixel":
        train = train_pixel
    else:
        from synthratio.diffusion.latent import train_latent as train  # imports peft and transformers
    files = generator_files(params, args.keep, args.generator)
    # Under a launcher every process trains; one logs, saves and writes (two dvclive loggers or two
    # pipeline saves racing on the same files corrupt them).
    main_process = PartialState(cpu=device.type == "cpu").is_main_process  # as train_diffusion's Accelerator
    with open_live(files.live) if main_process else contextlib.nullcontext() as live:
        result = train(
            cohort.images,
            cohort.labels,
            classes,
            config=config,
            device=device,
            checkpoint_dir=files.checkpoints,
            live=live,
        )
    if not main_process:
        return
    patients = cohort.patients[training_rows(cohort.labels, classes, config)]
    save_pipeline(
        result.pipeline, files.model, classes=result.classes, training_patients=patients, pretrained=config.pretrained
    )
    shutil.rmtree(files.checkpoints, ignore_errors=True)
    tail = result.losses[-min(50, len(result.losses)) :]
    write_metrics(
        files.finetune_metrics,
        {
            "keep": args.keep,
            "generator": args.generator,
            "final_loss": round(float(np.mean(tail)), 6),
            "steps": len(result.losses),
            "resumed_from_step": result.resumed_from_step,
            "train_images": len(patients),
            "train_patients": len(set(patients.tolist())),
            "seconds": round(result.seconds, 1),
            "images_per_second": float(f"{result.images_per_second:.3g}"),
            "device": str(device),
            "precision": resolve_mixed_precision(config, device),
        },
        headline=("final_loss",),  # the counts are the cohort's, the same for every generator of it
    )
    return (
        f"trained {len(result.losses)} steps on {len(patients)} images, final loss {np.mean(tail):.4f} (mean of the "
        f"last {len(tail)}), {rate(result.images_per_second)} images/s on {device}"
    )


if __name__ == "__main__":
    run_stage(main)
