"""Stage generate: one synthetic scan per seed, <synthetic>/<CLASS>/<seed:06d>.png, and a real-vs-synthetic grid."""

import logging
import time

import numpy as np
from accelerate import PartialState

from synthratio.config import load_params
from synthratio.data.ingest import load_split
from synthratio.data.synthetic import load_synthetic, synthetic_seeds
from synthratio.diffusion.noise import make_noise_injector, measure_noise
from synthratio.diffusion.sampling import generate_to_folder
from synthratio.report import save_sample_grid
from synthratio.runtime import setup, write_json

log = logging.getLogger("generate")


def main() -> None:
    params = load_params()
    device = setup(params.runtime)
    config, target = params.generate, params.finetune.target_class
    seeds = synthetic_seeds(config)
    folder = params.paths.synthetic / target
    log.info("sampling %d %s scans with %s, %d steps, batch %d on %s", len(seeds), target, config.sampler,
             config.inference_steps, config.batch_size, device)
    size = params.finetune.image_size
    images, labels = load_split(params.paths.prepared, "train", size)
    real = images[labels == params.prepare.classes.index(target)]
    postprocess, noise_settings, noise = None, None, {}
    if config.noise_injection:  # the spectrum of the real training scans' vitreous, at the generated size
        profile = measure_noise(np.asarray(real))
        log.info("noise injection: std %.2f grey levels x %g, from %d background patches of %d px", profile.std,
                 config.noise_strength, profile.patches, profile.patch_size)
        postprocess = make_noise_injector(profile, config.noise_strength)
        noise_settings = {"noise_profile": profile.to_dict(), "noise_strength": config.noise_strength}
        noise = {"noise_std_measured": round(profile.std, 3), "noise_patches": profile.patches}
    started = time.perf_counter()
    # staging sits beside the stage's output, which DVC deletes before a rerun: a killed run resumes
    staging = params.paths.synthetic.with_name(params.paths.synthetic.name + ".partial") / target
    generate_to_folder(params.paths.diffusion_model, folder, seeds, config, device, params.runtime.progress, staging,
                       class_name=target, prompt=params.finetune.prompts[0], postprocess=postprocess,
                       settings_extra=noise_settings)
    seconds = time.perf_counter() - started
    state = PartialState()
    if not state.is_main_process:  # under accelerate launch, the main process writes the rest
        return
    write_json(params.paths.metrics / "generate.json", {
        "images": len(seeds),
        "seconds": round(seconds, 1),
        "images_per_second": round(len(seeds) / seconds, 2),
        "device": str(device),
        "processes": state.num_processes,
        **noise,
    })
    real = np.asarray(real[:: max(1, len(real) // 8)][:8])  # spread over patients: neighbours are one eye
    save_sample_grid(real, load_synthetic(folder, seeds[:8], size), params.paths.plots / "samples.png")


if __name__ == "__main__":
    main()
