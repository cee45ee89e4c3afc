import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DPMSolverMultistepScheduler
from PIL import Image
from pipeline_helpers import two_cpu_processes

import synthratio.diffusion.sampling as sampling
from synthratio.config import CLASS_NAMES, SAMPLERS, GenerateConfig, load_params
from synthratio.data.synthetic import NOT_CLASSES, SAMPLING_FILE, SCHEDULER_FOLDER, load_synthetic, sampling_settings
from synthratio.diffusion.pipelines import load_pipeline, save_pipeline
from synthratio.diffusion.pixel import build_unet
from synthratio.diffusion.sampling import (
    ClassDraw,
    generate_synthetic,
    load_sampler,
    make_sampler,
    sample_images,
    shard_seeds,
)
from synthratio.diffusion.schedules import build_training_scheduler

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[2]
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


def draw_set(
    model_dir: Path,
    out: Path,
    seeds: list[int],
    *,
    config: GenerateConfig,
    class_name: str = "CNV",
    staging: Path | None = None,
    prompt: str | None = None,
    **draw,
) -> list[Path]:
    """A set of one class, `seeds` drawn by generate_synthetic (`draw`: the ClassDraw's postprocess and
    settings_extra); the class's PNGs in seed order."""
    drawn = generate_synthetic(
        model_dir,
        out,
        [ClassDraw(class_name, seeds, **draw)],
        config=config,
        device=CPU,
        staging=staging,
        prompt=prompt,
    )
    return drawn.files[class_name]


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
    out = tmp_path / "synthetic" / "set"
    paths = draw_set(model_dir, out, SEEDS, config=settings("ddim", 2))
    assert paths == [out / "CNV" / "000004.png", out / "CNV" / "000000.png", out / "CNV" / "000007.png"]
    assert sorted(p.name for p in (out / "CNV").iterdir()) == ["000000.png", "000004.png", "000007.png"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["set"]
    with Image.open(paths[0]) as image:
        assert image.mode == "L" and image.size == (16, 16)


def test_killed_run_leaves_no_folder_and_resumes(model_dir, tmp_path, monkeypatch):
    out, partial = tmp_path / "set", tmp_path / "set.partial"
    monkeypatch.setattr(sampling, "sample_images", crash_after(2))
    with pytest.raises(KeyboardInterrupt):
        draw_set(model_dir, out, SEEDS, config=settings("dpmsolver++", 1))
    assert not out.exists()
    assert sorted(p.name for p in (partial / "CNV").iterdir()) == ["000000.png", "000004.png", sampling.SETTINGS_FILE]
    assert json.loads((partial / "CNV" / sampling.SETTINGS_FILE).read_text())["sampler"] == "dpmsolver++"

    sampled: list[int] = []
    monkeypatch.setattr(sampling, "sample_images", recording(sampled))
    resumed = draw_set(model_dir, out, SEEDS, config=settings("dpmsolver++", 2))
    assert sampled == [7]
    assert not partial.exists()
    assert sorted(p.name for p in (out / "CNV").iterdir()) == ["000000.png", "000004.png", "000007.png"]

    fresh = draw_set(model_dir, tmp_path / "fresh", SEEDS, config=settings("dpmsolver++", 3))
    for a, b in zip(resumed, fresh):
        assert np.abs(np.asarray(Image.open(a), dtype=int) - np.asarray(Image.open(b))).max() <= 1


def test_partial_from_other_settings_is_discarded(model_dir, tmp_path):
    partial = tmp_path / "set.partial" / "CNV"
    partial.mkdir(parents=True)
    (partial / sampling.SETTINGS_FILE).write_text(json.dumps({"sampler": "ddpm"}))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(partial / "000000.png")
    (path,) = draw_set(model_dir, tmp_path / "set", [0], config=settings("unipc", 1))
    assert np.asarray(Image.open(path)).any()


def test_staging_outside_the_output_folder(model_dir, tmp_path):
    """The generate stage stages beside DVC's output, which DVC deletes before it reruns the stage."""
    out, staging = tmp_path / "synthetic" / "set", tmp_path / "synthetic.partial" / "set"
    draw_set(model_dir, out, [1, 2], config=settings("ddim", 2), staging=staging)
    assert sorted(p.name for p in (out / "CNV").iterdir()) == ["000001.png", "000002.png"]
    assert not staging.exists() and not (tmp_path / "synthetic" / "set.partial").exists()


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
        (path,) = draw_set(conditional_dir, tmp_path / name, [3], config=settings("ddim", 1), class_name=name)
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
    config = dataclasses.replace(settings("ddim", 1), inference_steps=1, class_guidance_scale=3.0)
    (written,) = draw_set(guidable_dir, tmp_path / "guided", [3], config=config)
    assert np.array_equal(np.asarray(Image.open(written)), guided.astype(np.uint8))


def test_class_guidance_without_a_null_class_is_refused(conditional_dir, tmp_path):
    config = dataclasses.replace(settings("ddim", 1), class_guidance_scale=2.0)
    with pytest.raises(ValueError, match=r"class_guidance_scale=2.0; .*conditional has no null class"):
        draw_set(conditional_dir, tmp_path / "set", [3], config=config)
    assert list(tmp_path.iterdir()) == []


def test_class_missing_from_classes_json_is_named(conditional_dir, tmp_path):
    with pytest.raises(ValueError, match=r"classes \['CNV', 'NORMAL'\]; class_name='DME'"):
        draw_set(conditional_dir, tmp_path / "set", [3], config=settings("ddim", 1), class_name="DME")


def test_postprocess_changes_each_image_before_writing(model_dir, tmp_path):
    plain = draw_set(model_dir, tmp_path / "plain", SEEDS, config=settings("ddim", 3))
    calls = []

    def invert(image: np.ndarray, seed: int) -> np.ndarray:
        calls.append(seed)
        return 255 - image

    inverted = draw_set(
        model_dir,
        tmp_path / "inverted",
        SEEDS,
        config=settings("ddim", 3),
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
        draw_set(model_dir, tmp_path / "set", [0, 7], config=settings("ddim", 1), settings_extra={"noise": 1.0})
    sampled: list[int] = []
    monkeypatch.setattr(sampling, "sample_images", recording(sampled))
    draw_set(model_dir, tmp_path / "set", [0, 7], config=settings("ddim", 1), settings_extra=extra)
    assert sampled == resampled


def test_postprocess_must_return_a_uint8_image(model_dir, tmp_path):
    with pytest.raises(ValueError, match=r"postprocess returned float64 \(16, 16\) for seed 4; expected uint8"):
        draw_set(
            model_dir,
            tmp_path / "set",
            SEEDS,
            config=settings("ddim", 1),
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
draws = [sampling.ClassDraw("CNV", {seeds!r})]
sampling.generate_synthetic(sys.argv[1], sys.argv[2], draws, config=config, device=torch.device("cpu"))
"""


def contents(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_two_processes_write_the_files_of_one(model_dir, tmp_path):
    """Two CPU processes (20-45 s on two busy cores) write byte-identical files to one process's."""
    config, seeds = settings("ddpm", 2), [4, 0, 7, 2, 9]
    one = draw_set(model_dir, tmp_path / "one", seeds, config=config)
    script = tmp_path / "generate.py"
    script.write_text(GENERATE_SCRIPT.format(config=dataclasses.asdict(config), seeds=seeds))
    launch = two_cpu_processes(script, str(model_dir), str(tmp_path / "two"))
    done = subprocess.run(launch, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    shares = sorted(re.findall(r"process (\d) of (\d) samples (\[[\d, ]*\])", done.stdout))  # lines may interleave
    assert shares == [("0", "2", "[4, 7, 9]"), ("1", "2", "[0, 2]")], done.stdout
    assert sorted(p.name for p in (tmp_path / "two" / "CNV").iterdir()) == sorted(p.name for p in one)
    assert contents(tmp_path / "two") == contents(tmp_path / "one")  # the scans, scheduler/ and sampling.json
    assert not (tmp_path / "two.partial").exists()


# --- a set of synthetic scans: class folders beside the scheduler they were drawn with and sampling.json ---


def params_generate(**changes) -> GenerateConfig:
    """params.yaml's generate section, smaller where it only costs time."""
    return dataclasses.replace(load_params(REPO / "params.yaml").generate, batch_size=2, num_images=2, **changes)


def public_config(scheduler) -> dict:
    """A scheduler's settings, without diffusers' bookkeeping (_class_name, _use_default_values...)."""
    return {key: value for key, value in scheduler.config.items() if not key.startswith("_")}


@pytest.mark.parametrize("sampler", [None, "ddim", "euler"])
def test_set_saves_the_sampler_it_drew_with(model_dir, tmp_path, sampler):
    """scheduler/ loads back with diffusers as the params' sampler, spacing and steps, and redraws the scans."""
    config = params_generate(inference_steps=3, **({"sampler": sampler} if sampler else {}))
    out = tmp_path / "synthetic" / "keep_100_gen_0"
    drawn = generate_synthetic(model_dir, out, [ClassDraw("CNV", [5, 2])], config=config, device=CPU)
    assert sorted(p.name for p in out.iterdir()) == ["CNV", SAMPLING_FILE, SCHEDULER_FOLDER]
    assert sorted(p.name for p in (out / "CNV").iterdir()) == ["000002.png", "000005.png"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["keep_100_gen_0"]  # no staging left
    scheduler_class = sampling.SCHEDULERS[config.sampler]
    loaded = scheduler_class.from_pretrained(out, subfolder="scheduler")
    assert type(loaded) is scheduler_class is type(load_sampler(out)) is type(drawn.sampler)
    assert loaded.config.timestep_spacing == config.timestep_spacing
    assert public_config(loaded) == public_config(drawn.sampler)
    record = sampling_settings(out)
    assert record["inference_steps"] == config.inference_steps and record["sampler"] == config.sampler
    assert record["classes"] == {"CNV": {"label": None, "seeds": [5, 2]}}
    assert (record["first_seed"], record["num_images"]) == (config.first_seed, config.num_images)
    loaded.set_timesteps(record["inference_steps"])
    assert len(loaded.timesteps) == config.inference_steps
    unet = load_pipeline(model_dir, CPU).unet
    again = sample_images(unet, loaded, [5, 2], inference_steps=record["inference_steps"], device=CPU, batch_size=2)
    for seed, image in again:
        assert np.abs(np.asarray(Image.open(out / "CNV" / f"{seed:06d}.png"), dtype=int) - image).max() <= 1
    assert load_synthetic(out / "CNV", [2, 5], 16).shape == (2, 16, 16)


def test_dpmsolver_config_from_the_folder_matches_params(pipeline, model_dir, tmp_path):
    """The recipe's sampler, through from_config as well as from_pretrained, steps where params put them."""
    config = params_generate(inference_steps=3)
    assert config.sampler == "dpmsolver++"
    generate_synthetic(model_dir, tmp_path / "set", [ClassDraw("CNV", [0])], config=config, device=CPU)
    saved = json.loads((tmp_path / "set" / SCHEDULER_FOLDER / "scheduler_config.json").read_text())
    assert saved["_class_name"] == "DPMSolverMultistepScheduler" and saved["algorithm_type"] == "dpmsolver++"
    scheduler = DPMSolverMultistepScheduler.from_config(
        DPMSolverMultistepScheduler.load_config(tmp_path / "set", subfolder="scheduler")
    )
    assert scheduler.config.timestep_spacing == config.timestep_spacing == "trailing"
    assert scheduler.config.lambda_min_clipped == -5.1  # the cosine schedule's clip survives the round trip
    expected = make_sampler(config.sampler, pipeline.scheduler.config, config.timestep_spacing)
    for sampler in (scheduler, expected):
        sampler.set_timesteps(sampling_settings(tmp_path / "set")["inference_steps"])
    assert scheduler.timesteps.tolist() == expected.timesteps.tolist() and len(scheduler.timesteps) == 3


def test_set_of_two_classes_records_each(conditional_dir, tmp_path):
    draws = [ClassDraw("NORMAL", [3]), ClassDraw("CNV", [4, 5], settings_extra={"noise_strength": 0.5})]
    drawn = generate_synthetic(conditional_dir, tmp_path / "set", draws, config=settings("ddim", 2), device=CPU)
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["CNV", "NORMAL", SAMPLING_FILE, SCHEDULER_FOLDER]
    assert drawn.files == {
        "NORMAL": [tmp_path / "set/NORMAL/000003.png"],
        "CNV": [tmp_path / "set/CNV/000004.png", tmp_path / "set/CNV/000005.png"],
    }
    classes = sampling_settings(tmp_path / "set")["classes"]
    assert classes == {
        "NORMAL": {"label": 1, "seeds": [3]},
        "CNV": {"label": 0, "seeds": [4, 5], "noise_strength": 0.5},
    }
    assert drawn.summary(2.0) == "drew 3 scans (1 NORMAL, 2 CNV) with DDIMScheduler, 3 trailing steps, 1.5 img/s"


def test_killed_set_publishes_nothing_and_resumes(model_dir, tmp_path, monkeypatch):
    out, partial = tmp_path / "set", tmp_path / "set.partial"
    draws = [ClassDraw("CNV", [0, 1]), ClassDraw("DME", [2, 3])]
    calls = iter([crash_after(10), crash_after(1)])  # sample_images per class: all of CNV, one of DME
    monkeypatch.setattr(sampling, "sample_images", lambda *a, **k: next(calls)(*a, **k))
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(model_dir, out, draws, config=settings("ddim", 1), device=CPU)
    assert not out.exists()
    assert sorted(p.name for p in (partial / "CNV").iterdir()) == ["000000.png", "000001.png", sampling.SETTINGS_FILE]
    (partial / "NORMAL").mkdir()  # a class of another run, and a record a kill interrupted: neither is kept
    (partial / SCHEDULER_FOLDER).mkdir()
    (partial / SCHEDULER_FOLDER / "stale.json").write_text("{}")

    sampled: list[int] = []
    monkeypatch.setattr(sampling, "sample_images", recording(sampled))
    drawn = generate_synthetic(model_dir, out, draws, config=settings("ddim", 2), device=CPU)
    assert sampled == [3] and drawn.sampled == 1 and not partial.exists()
    assert sorted(p.name for p in out.iterdir()) == ["CNV", "DME", SAMPLING_FILE, SCHEDULER_FOLDER]
    assert sorted(p.name for p in (out / SCHEDULER_FOLDER).iterdir()) == ["scheduler_config.json"]
    assert (
        drawn.summary(0.5)
        == "drew 1 of 4 scans (2 CNV, 2 DME; 3 resumed) with DDIMScheduler, 3 trailing steps, 2.0 img/s"
    )


def test_no_class_is_named_like_the_record():
    assert not set(CLASS_NAMES) & NOT_CLASSES


@pytest.mark.parametrize("names", [["scheduler"], ["CNV", "CNV"], []])
def test_set_refuses_record_names_and_repeats_as_classes(model_dir, tmp_path, names):
    with pytest.raises(ValueError, match=r"generate: classes .*none of \['sampling.json', 'scheduler'\]"):
        generate_synthetic(
            model_dir, tmp_path / "set", [ClassDraw(n, [0]) for n in names], config=settings("ddim", 1), device=CPU
        )
    assert list(tmp_path.iterdir()) == []


def test_load_sampler_names_a_missing_or_foreign_scheduler(model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"scheduler_config.json: no sampler saved .*rerun generate"):
        load_sampler(tmp_path)
    generate_synthetic(model_dir, tmp_path / "set", [ClassDraw("CNV", [0])], config=settings("ddim", 1), device=CPU)
    path = tmp_path / "set" / SCHEDULER_FOLDER / "scheduler_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"_class_name": "LCMScheduler"}))
    with pytest.raises(ValueError, match=r"_class_name='LCMScheduler'; expected one of \['DDIMScheduler'"):
        load_sampler(tmp_path / "set")
