import dataclasses
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline
from PIL import Image
from pipeline_helpers import two_cpu_processes

import synthratio.diffusion.sampling as sampling
from synthratio.config import SAMPLERS, GenerateConfig
from synthratio.diffusion.pipelines import load_pipeline, save_pipeline
from synthratio.diffusion.pixel import build_unet
from synthratio.diffusion.sampling import generate_to_folder, make_sampler, sample_images, shard_seeds
from synthratio.diffusion.schedules import build_training_scheduler

CPU = torch.device("cpu")
SEEDS = [4, 0, 7]


def settings(sampler: str, batch_size: int) -> GenerateConfig:
    return GenerateConfig(
        sampler=sampler,
        timestep_spacing="trailing",
        inference_steps=3,
        num_images=3,
        first_seed=0,
        batch_size=batch_size,
        guidance_scale=1.0,
        noise_injection=False,
        noise_strength=1.0,
    )


@pytest.fixture(scope="module")
def pipeline(tiny_finetune) -> DDPMPipeline:
    """An untrained tiny model: sampling code does not care whether the weights are any good."""
    return DDPMPipeline(unet=build_unet(tiny_finetune).eval(), scheduler=build_training_scheduler(tiny_finetune))


@pytest.fixture(scope="module")
def model_dir(pipeline, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "diffusion"
    save_pipeline(pipeline, folder)
    return folder


def crash_after(count: int):
    """sample_images that raises KeyboardInterrupt (a killed run) after yielding `count` images."""

    def crashing(*args, **kwargs):
        for done, item in enumerate(sample_images(*args, **kwargs)):
            if done == count:
                raise KeyboardInterrupt
            yield item

    return crashing


def recording(sampled: list[int]):
    """sample_images that appends the seeds it is asked for to `sampled`."""

    def record(unet, sampler, seeds, *args, **kwargs):
        sampled.extend(seeds)
        return sample_images(unet, sampler, seeds, *args, **kwargs)

    return record


def test_every_sampler_of_the_config_has_a_scheduler():
    assert tuple(sampling.SCHEDULERS) == SAMPLERS


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
    images = dict(sample_images(pipeline.unet, sampler, SEEDS, inference_steps=4, device=CPU, batch_size=2))
    assert list(images) == SEEDS
    for image in images.values():
        assert image.dtype == np.uint8 and image.shape == (16, 16)
    assert not np.array_equal(images[4], images[0])


@pytest.mark.parametrize("name", ["dpmsolver++", "ddpm"])
def test_image_does_not_depend_on_batch(pipeline, name):
    sampler = make_sampler(name, pipeline.scheduler.config)
    alone = dict(sample_images(pipeline.unet, sampler, SEEDS, inference_steps=4, device=CPU, batch_size=1))
    together = dict(sample_images(pipeline.unet, sampler, SEEDS[::-1], inference_steps=4, device=CPU, batch_size=3))
    for seed in SEEDS:
        assert np.abs(alone[seed].astype(int) - together[seed]).max() <= 1


def test_load_missing_pipeline_names_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        load_pipeline(tmp_path / "nowhere", CPU)


def test_load_unknown_pipeline_class_names_it(model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps(index | {"_class_name": "FluxPipeline"}))
    expected = r"_class_name='FluxPipeline'; expected one of \['DDPMPipeline', 'StableDiffusionPipeline'\]"
    with pytest.raises(ValueError, match=expected):
        load_pipeline(folder, CPU)


def test_generate_writes_seed_named_pngs(model_dir, tmp_path):
    out = tmp_path / "synthetic" / "CNV"
    paths = generate_to_folder(model_dir, out, SEEDS, config=settings("ddim", 2), device=CPU)
    assert paths == [out / "000004.png", out / "000000.png", out / "000007.png"]
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000004.png", "000007.png"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["CNV"]
    with Image.open(paths[0]) as image:
        assert image.mode == "L" and image.size == (16, 16)


def test_killed_run_leaves_no_folder_and_resumes(model_dir, tmp_path, monkeypatch):
    out = tmp_path / "CNV"
    monkeypatch.setattr(sampling, "sample_images", crash_after(2))
    with pytest.raises(KeyboardInterrupt):
        generate_to_folder(model_dir, out, SEEDS, config=settings("dpmsolver++", 1), device=CPU)
    assert not out.exists()
    partial = tmp_path / "CNV.partial"
    assert sorted(p.name for p in partial.iterdir()) == ["000000.png", "000004.png", sampling.SETTINGS_FILE]
    assert json.loads((partial / sampling.SETTINGS_FILE).read_text())["sampler"] == "dpmsolver++"

    sampled: list[int] = []
    monkeypatch.setattr(sampling, "sample_images", recording(sampled))
    generate_to_folder(model_dir, out, SEEDS, config=settings("dpmsolver++", 2), device=CPU)
    assert sampled == [7]
    assert not partial.exists()
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000004.png", "000007.png"]

    fresh = tmp_path / "fresh"
    generate_to_folder(model_dir, fresh, SEEDS, config=settings("dpmsolver++", 3), device=CPU)
    for name in ["000000.png", "000004.png", "000007.png"]:
        a, b = (np.asarray(Image.open(folder / name), dtype=int) for folder in (out, fresh))
        assert np.abs(a - b).max() <= 1


def test_partial_from_other_settings_is_discarded(model_dir, tmp_path):
    partial = tmp_path / "CNV.partial"
    partial.mkdir()
    (partial / sampling.SETTINGS_FILE).write_text(json.dumps({"sampler": "ddpm"}))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(partial / "000000.png")
    generate_to_folder(model_dir, tmp_path / "CNV", [0], config=settings("unipc", 1), device=CPU)
    assert np.asarray(Image.open(tmp_path / "CNV" / "000000.png")).any()


def test_staging_outside_the_output_folder(model_dir, tmp_path):
    """The generate stage stages beside DVC's output, which DVC deletes before it reruns the stage."""
    out, staging = tmp_path / "synthetic" / "CNV", tmp_path / "synthetic.partial" / "CNV"
    generate_to_folder(model_dir, out, [1, 2], config=settings("ddim", 2), device=CPU, staging=staging)
    assert sorted(p.name for p in out.iterdir()) == ["000001.png", "000002.png"]
    assert not staging.exists() and not (tmp_path / "synthetic" / "CNV.partial").exists()


@pytest.fixture(scope="module")
def conditional_dir(tiny_finetune, tmp_path_factory):
    """An untrained class-conditional model over two classes, saved with its classes.json."""
    unet = build_unet(tiny_finetune, num_classes=2).eval()
    pipeline = DDPMPipeline(unet=unet, scheduler=build_training_scheduler(tiny_finetune))
    folder = tmp_path_factory.mktemp("models") / "conditional"
    save_pipeline(pipeline, folder, classes=("CNV", "NORMAL"))
    return folder


def test_class_conditional_model_samples_the_named_class(conditional_dir, tmp_path):
    images = {}
    for name in ("CNV", "NORMAL"):
        (path,) = generate_to_folder(
            conditional_dir, tmp_path / name, [3], config=settings("ddim", 1), device=CPU, class_name=name
        )
        images[name] = np.asarray(Image.open(path))
    assert not np.array_equal(images["CNV"], images["NORMAL"])


@pytest.fixture(scope="module")
def guidable_dir(tiny_finetune, tmp_path_factory):
    """An untrained class-conditional model that also learned a null class (finetune.label_dropout)."""
    config = dataclasses.replace(
        tiny_finetune, class_conditional=True, label_dropout=0.1, prediction_type="v_prediction"
    )
    unet = build_unet(config, num_classes=2).eval()
    torch.nn.init.normal_(unet.class_embedding.weight, std=1.0, generator=torch.Generator().manual_seed(0))
    pipeline = DDPMPipeline(unet=unet, scheduler=build_training_scheduler(config))
    folder = tmp_path_factory.mktemp("models") / "guidable"
    save_pipeline(pipeline, folder, classes=("CNV", "NORMAL"))
    return folder


def test_class_guidance_extrapolates_from_the_null_class(guidable_dir, tmp_path):
    pipeline = load_pipeline(guidable_dir, CPU)

    def sample(label: int, scale: float = 1.0) -> np.ndarray:
        sampler = make_sampler("ddim", pipeline.scheduler.config)
        images = sample_images(
            pipeline.unet,
            sampler,
            [3],
            inference_steps=1,
            device=CPU,
            batch_size=1,
            class_label=label,
            null_label=2,
            guidance_scale=scale,
        )
        return next(images)[1].astype(float)

    # one DDIM step from t = T-1 is linear in the model output up to the clip to [0, 255]:
    # guided = null + 3 (class - null) wherever neither input image was clipped
    cnv, null, guided = sample(0), sample(2), sample(0, 3.0)
    inside = (cnv > 0) & (cnv < 255) & (null > 0) & (null < 255)
    assert inside.mean() > 0.5 and not np.array_equal(cnv, null)
    expected = np.clip(null + 3.0 * (cnv - null), 0, 255)
    assert np.abs(guided - expected)[inside].max() <= 4  # each image is rounded to uint8: 1 + 3 x 1/2 x 2
    (written,) = generate_to_folder(
        guidable_dir,
        tmp_path / "guided",
        [3],
        config=dataclasses.replace(settings("ddim", 1), inference_steps=1, class_guidance_scale=3.0),
        device=CPU,
        class_name="CNV",
    )
    assert np.array_equal(np.asarray(Image.open(written)), guided.astype(np.uint8))


def test_class_guidance_without_a_null_class_is_refused(conditional_dir, tmp_path):
    config = dataclasses.replace(settings("ddim", 1), class_guidance_scale=2.0)
    with pytest.raises(ValueError, match=r"class_guidance_scale=2.0; .*conditional has no null class"):
        generate_to_folder(conditional_dir, tmp_path / "CNV", [3], config=config, device=CPU, class_name="CNV")
    assert not (tmp_path / "CNV").exists() and not (tmp_path / "CNV.partial").exists()


def test_class_missing_from_classes_json_is_named(conditional_dir, tmp_path):
    with pytest.raises(ValueError, match=r"classes \['CNV', 'NORMAL'\]; class_name='DME'"):
        generate_to_folder(
            conditional_dir, tmp_path / "DME", [3], config=settings("ddim", 1), device=CPU, class_name="DME"
        )


def test_postprocess_changes_each_image_before_writing(model_dir, tmp_path):
    plain = generate_to_folder(model_dir, tmp_path / "plain", SEEDS, config=settings("ddim", 3), device=CPU)
    calls = []

    def invert(image: np.ndarray, seed: int) -> np.ndarray:
        calls.append(seed)
        return 255 - image

    inverted = generate_to_folder(
        model_dir,
        tmp_path / "inverted",
        SEEDS,
        config=settings("ddim", 3),
        device=CPU,
        postprocess=invert,
        settings_extra={"invert": True},
    )
    assert sorted(calls) == sorted(SEEDS)
    for a, b in zip(plain, inverted):
        assert np.array_equal(255 - np.asarray(Image.open(a)), np.asarray(Image.open(b)))


@pytest.mark.parametrize("extra, resampled", [({"noise": 1.0}, [7]), ({"noise": 2.0}, [0, 7])])
def test_settings_extra_joins_the_resume_fingerprint(model_dir, tmp_path, monkeypatch, extra, resampled):
    monkeypatch.setattr(sampling, "sample_images", crash_after(1))
    with pytest.raises(KeyboardInterrupt):
        generate_to_folder(
            model_dir, tmp_path / "CNV", [0, 7], config=settings("ddim", 1), device=CPU, settings_extra={"noise": 1.0}
        )
    sampled: list[int] = []
    monkeypatch.setattr(sampling, "sample_images", recording(sampled))
    generate_to_folder(
        model_dir, tmp_path / "CNV", [0, 7], config=settings("ddim", 1), device=CPU, settings_extra=extra
    )
    assert sampled == resampled


def test_postprocess_must_return_a_uint8_image(model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"postprocess returned float64 \(16, 16\) for seed 4; expected uint8"):
        generate_to_folder(
            model_dir,
            tmp_path / "CNV",
            SEEDS,
            config=settings("ddim", 1),
            device=CPU,
            postprocess=lambda image, seed: image / 255.0,
        )


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_cover_every_seed_once(world):
    seeds = list(range(10, 17))
    shards = [shard_seeds(seeds, rank, world) for rank in range(world)]
    assert sorted(sum(shards, [])) == seeds
    with pytest.raises(ValueError, match="process_index=3"):
        shard_seeds(seeds, 3, 3)


GENERATE_SCRIPT = """
import sys, torch
from accelerate import PartialState
import synthratio.diffusion.sampling as sampling
from synthratio.config import GenerateConfig
torch.set_num_threads(1)
real = sampling.sample_images

def report(unet, sampler, seeds, *args, **kwargs):
    state = PartialState()
    print(f"process {{state.process_index}} of {{state.num_processes}} samples {{list(seeds)}}", flush=True)
    return real(unet, sampler, seeds, *args, **kwargs)

sampling.sample_images = report
config = GenerateConfig(**{config!r})
sampling.generate_to_folder(sys.argv[1], sys.argv[2], {seeds!r}, config=config, device=torch.device("cpu"))
"""


def test_two_processes_write_the_files_of_one(model_dir, tmp_path):
    """Two CPU processes (20-45 s on two busy cores) write byte-identical files to one process's."""
    config, seeds = settings("ddpm", 2), [4, 0, 7, 2, 9]
    one = generate_to_folder(model_dir, tmp_path / "one", seeds, config=config, device=CPU)
    script = tmp_path / "generate.py"
    script.write_text(GENERATE_SCRIPT.format(config=dataclasses.asdict(config), seeds=seeds))
    launch = two_cpu_processes(script, str(model_dir), str(tmp_path / "two"))
    done = subprocess.run(launch, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    shares = sorted(re.findall(r"process (\d) of (\d) samples (\[[\d, ]*\])", done.stdout))  # lines may interleave
    assert shares == [("0", "2", "[4, 7, 9]"), ("1", "2", "[0, 2]")], done.stdout
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in one)
    assert all(path.read_bytes() == (tmp_path / "two" / path.name).read_bytes() for path in one)
    assert not (tmp_path / "two.partial").exists()
