import json

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline
from PIL import Image

import synthratio.diffusion.sampling as sampling
from synthratio.config import SAMPLERS as CONFIG_SAMPLERS
from synthratio.config import GenerateConfig
from synthratio.diffusion.pixel import build_training_scheduler, build_unet, save_pipeline
from synthratio.diffusion.sampling import (
    SAMPLERS,
    generate_to_folder,
    load_pipeline,
    make_sampler,
    sample_images,
)

CPU = torch.device("cpu")
SEEDS = [4, 0, 7]


def settings(sampler: str, batch_size: int) -> GenerateConfig:
    return GenerateConfig(sampler=sampler, timestep_spacing="trailing", inference_steps=3, num_images=3,
                          first_seed=0, batch_size=batch_size, guidance_scale=1.0,
                          noise_injection=False, noise_strength=1.0)


@pytest.fixture(scope="module")
def pipeline(tiny_finetune) -> DDPMPipeline:
    """An untrained tiny model: sampling code does not care whether the weights are any good."""
    return DDPMPipeline(unet=build_unet(tiny_finetune).eval(), scheduler=build_training_scheduler(tiny_finetune))


@pytest.fixture(scope="module")
def model_dir(pipeline, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "diffusion"
    save_pipeline(pipeline, folder)
    return folder


def test_samplers_match_config():
    assert SAMPLERS == CONFIG_SAMPLERS


def test_bad_sampler_name(pipeline):
    with pytest.raises(ValueError, match=r"generate.sampler='heun'; expected one of \['ddim', 'ddpm'"):
        make_sampler("heun", pipeline.scheduler.config)
    with pytest.raises(ValueError, match=r"generate.timestep_spacing='late'; expected one of"):
        make_sampler("ddim", pipeline.scheduler.config, "late")


@pytest.mark.parametrize("spacing, first", [("trailing", 99), ("leading", 66)])
def test_timestep_spacing_sets_the_first_step(pipeline, spacing, first):
    sampler = make_sampler("ddim", pipeline.scheduler.config, spacing)
    sampler.set_timesteps(3)
    assert int(sampler.timesteps[0]) == first


def test_dpmsolver_clips_lambda_on_cosine(pipeline):
    sampler = make_sampler("dpmsolver++", pipeline.scheduler.config)
    assert sampler.config.algorithm_type == "dpmsolver++"
    assert sampler.config.lambda_min_clipped == -5.1


@pytest.mark.parametrize("name", ["ddpm", "ddim", "dpmsolver++", "unipc"])
def test_samplers_clip_x0_to_data_range(pipeline, name):
    config = make_sampler(name, pipeline.scheduler.config).config
    assert config.get("clip_sample") or (config.get("thresholding") and config.sample_max_value == 1.0)


@pytest.mark.parametrize("name", SAMPLERS)
def test_each_sampler_gives_uint8_images(pipeline, name):
    sampler = make_sampler(name, pipeline.scheduler.config)
    images = dict(sample_images(pipeline.unet, sampler, SEEDS, 4, CPU, batch_size=2, progress=False))
    assert list(images) == SEEDS
    for image in images.values():
        assert image.dtype == np.uint8 and image.shape == (16, 16)
    assert not np.array_equal(images[4], images[0])


@pytest.mark.parametrize("name", ["dpmsolver++", "ddpm"])
def test_image_does_not_depend_on_batch(pipeline, name):
    sampler = make_sampler(name, pipeline.scheduler.config)
    alone = dict(sample_images(pipeline.unet, sampler, SEEDS, 4, CPU, batch_size=1, progress=False))
    together = dict(sample_images(pipeline.unet, sampler, SEEDS[::-1], 4, CPU, batch_size=3, progress=False))
    for seed in SEEDS:
        assert np.abs(alone[seed].astype(int) - together[seed]).max() <= 1


def test_load_missing_pipeline_names_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        load_pipeline(tmp_path / "nowhere", CPU)


def test_generate_writes_seed_named_pngs(model_dir, tmp_path):
    out = tmp_path / "synthetic" / "CNV"
    paths = generate_to_folder(model_dir, out, SEEDS, settings("ddim", 2), CPU, progress=False)
    assert paths == [out / "000004.png", out / "000000.png", out / "000007.png"]
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000004.png", "000007.png"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["CNV"]
    with Image.open(paths[0]) as image:
        assert image.mode == "L" and image.size == (16, 16)


def test_killed_run_leaves_no_folder_and_resumes(model_dir, tmp_path, monkeypatch):
    out = tmp_path / "CNV"
    real_sample_images = sampling.sample_images

    def crash_after_two(*args, **kwargs):
        for count, item in enumerate(real_sample_images(*args, **kwargs)):
            if count == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(sampling, "sample_images", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        generate_to_folder(model_dir, out, SEEDS, settings("dpmsolver++", 1), CPU, progress=False)
    assert not out.exists()
    partial = tmp_path / "CNV.partial"
    assert sorted(p.name for p in partial.iterdir()) == ["000000.png", "000004.png", sampling.SETTINGS_FILE]
    assert json.loads((partial / sampling.SETTINGS_FILE).read_text())["sampler"] == "dpmsolver++"

    sampled: list[int] = []

    def record(unet, sampler, seeds, *args, **kwargs):
        sampled.extend(seeds)
        return real_sample_images(unet, sampler, seeds, *args, **kwargs)

    monkeypatch.setattr(sampling, "sample_images", record)
    generate_to_folder(model_dir, out, SEEDS, settings("dpmsolver++", 2), CPU, progress=False)
    assert sampled == [7]
    assert not partial.exists()
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000004.png", "000007.png"]

    fresh = tmp_path / "fresh"
    generate_to_folder(model_dir, fresh, SEEDS, settings("dpmsolver++", 3), CPU, progress=False)
    for name in ["000000.png", "000004.png", "000007.png"]:
        a, b = (np.asarray(Image.open(folder / name), dtype=int) for folder in (out, fresh))
        assert np.abs(a - b).max() <= 1


def test_partial_from_other_settings_is_discarded(model_dir, tmp_path):
    partial = tmp_path / "CNV.partial"
    partial.mkdir()
    (partial / sampling.SETTINGS_FILE).write_text(json.dumps({"sampler": "ddpm"}))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(partial / "000000.png")
    generate_to_folder(model_dir, tmp_path / "CNV", [0], settings("unipc", 1), CPU, progress=False)
    assert np.asarray(Image.open(tmp_path / "CNV" / "000000.png")).any()


def test_staging_outside_the_output_folder(model_dir, tmp_path):
    """The generate stage stages beside DVC's output, which DVC deletes before it reruns the stage."""
    out, staging = tmp_path / "synthetic" / "CNV", tmp_path / "synthetic.partial" / "CNV"
    generate_to_folder(model_dir, out, [1, 2], settings("ddim", 2), CPU, progress=False, staging=staging)
    assert sorted(p.name for p in out.iterdir()) == ["000001.png", "000002.png"]
    assert not staging.exists() and not (tmp_path / "synthetic" / "CNV.partial").exists()
