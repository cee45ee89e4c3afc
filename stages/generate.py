"""Stage generate@keep-generator: one synthetic scan per image seed and class of finetune.target_class from
the generator of cohort `keep` and seed `generator`, <synthetic>/keep_<keep>_gen_<generator>/<CLASS>/<seed:06d>.png,
and a real-vs-synthetic grid. Image seeds are the same for every generator (common random numbers): the
generators' weights are what differs."""

import logging
import time

from synthratio.config import check_generator, load_params, run_stage, stage_arguments

log = logging.getLogger("generate")


def main() -> None:
    args = stage_arguments(__doc__)
    params = load_params()
    check_generator(params, args.generator)
    # imported once params.yaml is read and checked: torch, diffusers and sklearn take seconds to import
    import numpy as np
    from accelerate import PartialState

    from synthratio.data.cohort import cohort_of
    from synthratio.data.synthetic import load_synthetic, synthetic_seeds
    from synthratio.diffusion.noise import make_noise_injector, measure_noise
    from synthratio.diffusion.sampling import generate_to_folder
    from synthratio.figures import save_sample_grid
    from synthratio.layout import generator_files
    from synthratio.runtime import setup, write_json

    device = setup(params.runtime)
    config, targets = params.generate, params.finetune.target_classes
    files = generator_files(params, args.keep, args.generator)
    size, classes = params.finetune.image_size, params.prepare.classes
    cohort = cohort_of(params, args.keep, size=size)
    state = PartialState()
    grid, records, seconds = {}, {}, 0.0
    for index, target in enumerate(targets):  # one folder per class; a class-conditional model samples each in turn
        seeds = synthetic_seeds(config, index)
        log.info(
            "sampling %d %s scans of cohort keep=%d, generator %d, with %s, %d steps, batch %d on %s",
            len(seeds),
            target,
            args.keep,
            args.generator,
            config.sampler,
            config.inference_steps,
            config.batch_size,
            device,
        )
        real = cohort.images[cohort.labels == classes.index(target)]
        postprocess, noise_settings, records[target] = None, None, {}
        if config.noise_injection:  # the spectrum of the class's real training scans' vitreous, at the generated size
            profile = measure_noise(np.asarray(real))
            log.info(
                "noise injection: std %.2f grey levels x %g, from %d background patches of %d px",
                profile.std,
                config.noise_strength,
                profile.patches,
                profile.patch_size,
            )
            postprocess = make_noise_injector(profile, config.noise_strength)
            noise_settings = {"noise_profile": profile.to_dict(), "noise_strength": config.noise_strength}
            records[target] = {"noise_std_measured": round(profile.std, 3), "noise_patches": profile.patches}
        started = time.perf_counter()
        # staging sits beside the stage's output, which DVC deletes before a rerun: a killed run resumes
        generate_to_folder(
            files.model,
            files.synthetic / target,
            seeds,
            config=config,
            device=device,
            staging=files.synthetic.with_name(files.synthetic.name + ".partial") / target,
            class_name=target,
            prompt=params.finetune.prompts[0],
            postprocess=postprocess,
            settings_extra=noise_settings,
        )
        seconds += time.perf_counter() - started
        real = np.asarray(real[:: max(1, len(real) // 8)][:8])  # spread over patients: neighbours are one eye
        grid[target] = (real, load_synthetic(files.synthetic / target, seeds[:8], size))
    if not state.is_main_process:  # under accelerate launch, the main process writes the rest
        return
    images = config.num_images * len(targets)
    write_json(
        files.generate_detail,
        {  # timings and counts: no DVC metric, nothing here compares variants
            "keep": args.keep,
            "generator": args.generator,
            "images": images,
            "seconds": round(seconds, 1),
            "images_per_second": round(images / seconds, 2),
            "device": str(device),
            "processes": state.num_processes,
            # one class: its noise figures beside the rest, as before; several: one record per class
            **(records[targets[0]] if len(targets) == 1 else {"classes": records}),
        },
    )
    save_sample_grid(grid, files.samples_plot)


if __name__ == "__main__":
    run_stage(main)
