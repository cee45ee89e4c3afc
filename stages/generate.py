"""Stage generate@keep-generator: one synthetic scan per image seed and class of finetune.target_class from
the generator of cohort `keep` and seed `generator`, <synthetic>/keep_<keep>_gen_<generator>/<CLASS>/<seed:06d>.png,
and a real-vs-synthetic grid. Beside the class folders, scheduler/ (the sampler, by diffusers' save_pretrained) and
sampling.json (steps, guidance, seeds, noise injection) say how the scans were drawn. Image seeds are the same for
every generator (common random numbers): the generators' weights are what differs."""

import logging
import time

from synthratio.config import check_generator, load_params, stage_arguments
from synthratio.runtime import run_stage

log = logging.getLogger("generate")


def main() -> str:
    args = stage_arguments(__doc__)
    params = load_params()
    check_generator(params, args.generator)
    # imported once params.yaml is read and checked: torch, diffusers and sklearn take seconds to import
    import numpy as np
    from accelerate import PartialState

    from synthratio.data.cohort import cohort_of
    from synthratio.data.synthetic import load_synthetic, synthetic_seeds
    from synthratio.diffusion.noise import make_noise_injector, measure_noise
    from synthratio.diffusion.sampling import ClassDraw, generate_synthetic
    from synthratio.figures import save_sample_grid
    from synthratio.layout import generator_files
    from synthratio.runtime import setup, write_json

    device = setup(params.runtime)
    config, targets = params.generate, params.finetune.target_classes
    files = generator_files(params, args.keep, args.generator)
    size, classes = params.finetune.image_size, params.prepare.classes
    cohort = cohort_of(params, args.keep, size=size)
    state = PartialState()
    reals, draws, records = {}, [], {}
    for index, target in enumerate(targets):  # one folder per class; a class-conditional model samples each in turn
        real = cohort.images.select(cohort.labels == classes.index(target))  # unread until used
        reals[target] = np.asarray(real[:: max(1, len(real) // 8)][:8])  # spread over patients: neighbours are one eye
        postprocess, noise_settings, records[target] = None, None, {}
        if config.noise_injection:  # the spectrum of the class's real training scans' vitreous, at the generated size
            profile = measure_noise(real)  # scan by scan
            log.info(
                "noise injection for %s: std %.2f grey levels x %g, from %d background patches of %d px",
                target,
                profile.std,
                config.noise_strength,
                profile.patches,
                profile.patch_size,
            )
            postprocess = make_noise_injector(profile, config.noise_strength)
            noise_settings = {"noise_profile": profile.to_dict(), "noise_strength": config.noise_strength}
            records[target] = {"noise_std_measured": round(profile.std, 3), "noise_patches": profile.patches}
        draws.append(ClassDraw(target, synthetic_seeds(config, index), postprocess, noise_settings))
    log.info(
        "sampling %d scans each of %s, cohort keep=%d, generator %d, with %s, %d %s steps, batch %d on %s",
        config.num_images,
        ", ".join(targets),
        args.keep,
        args.generator,
        config.sampler,
        config.inference_steps,
        config.timestep_spacing,
        config.batch_size,
        device,
    )
    started = time.perf_counter()
    # staging sits beside the stage's output, which DVC deletes before a rerun: a killed run resumes
    drawn = generate_synthetic(
        files.model,
        files.synthetic,
        draws,
        config=config,
        device=device,
        staging=files.synthetic.with_name(files.synthetic.name + ".partial"),
        prompt=params.finetune.prompts[0],
    )
    seconds = time.perf_counter() - started
    if not state.is_main_process:  # under accelerate launch, the main process writes the rest
        return drawn.summary(seconds)
    write_json(
        files.generate_detail,
        {  # timings and counts: no DVC metric, nothing here compares variants
            "keep": args.keep,
            "generator": args.generator,
            "images": config.num_images * len(targets),
            "sampled": drawn.sampled,  # fewer than images where a killed run's were resumed
            "seconds": round(seconds, 1),
            "images_per_second": float(f"{drawn.sampled / seconds:.3g}"),
            "device": str(device),
            "processes": state.num_processes,
            # one class: its noise figures beside the rest, as before; several: one record per class
            **(records[targets[0]] if len(targets) == 1 else {"classes": records}),
        },
    )
    grid = {
        draw.name: (reals[draw.name], load_synthetic(files.synthetic / draw.name, draw.seeds[:8], size))
        for draw in draws
    }
    save_sample_grid(grid, files.samples_plot)
    return drawn.summary(seconds)


if __name__ == "__main__":
    run_stage(main)
