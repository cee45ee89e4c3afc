"""Latent backend on a tiny Stable Diffusion pipeline saved to disk and loaded through `from_pretrained`."""

import copy
import dataclasses
import json
import logging
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE
from PIL import Image
from tiny_sd import build_tiny_sd_pipeline

import synthratio.diffusion.latent as latent
from synthratio.config import FinetuneConfig, GenerateConfig, ParamsError
from synthratio.data.prepared import ScanRows
from synthratio.diffusion.latent import LATENT_CACHE, LORA_TARGETS, train_latent
from synthratio.diffusion.pipelines import (
    LORA_FILE,
    PretrainedUnavailableError,
    load_pipeline,
    load_pretrained,
    save_pipeline,
)
from synthratio.diffusion.sampling import ClassDraw, generate_synthetic, make_sampler, sample_latent_images
from synthratio.layout import TRAINING_PATIENTS_FILE

CPU = torch.device("cpu")
SEEDS = [4, 0, 7]
SIZE = 32
LORA_BOOST = 50  # scales trained LoRA up-projections where a test needs the adapter to show in the images


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("hub") / "tiny-sd", sample_size=SIZE)


@pytest.fixture(scope="module")
def base_scheduler(pretrained_dir) -> dict:
    """The pretrained pipeline's scheduler config (SD 1.5's: PNDM on scaled-linear betas, epsilon)."""
    return json.loads((pretrained_dir / "scheduler" / "scheduler_config.json").read_text())


@pytest.fixture(scope="module")
def config(tiny_finetune, pretrained_dir) -> FinetuneConfig:
    """The study's settings: the pretrained pipeline's own noise schedule and prediction type."""
    return dataclasses.replace(
        tiny_finetune,
        backend="latent",
        image_size=SIZE,
        pretrained=str(pretrained_dir),
        prompts=("oct scan showing cnv", "retina"),
        beta_schedule="pretrained",
        prediction_type="pretrained",
        train_timesteps=1000,
    )


CLASSES = ("CNV", "NORMAL")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, SIZE, SIZE), dtype=np.uint8)


def fit(images: np.ndarray, config: FinetuneConfig, **kwargs):
    """train_latent on `images`, all of the target class CNV."""
    return train_latent(images, np.zeros(len(images), np.int64), CLASSES, config=config, device=CPU, **kwargs)


@pytest.fixture(scope="module")
def trained(config, images, tmp_path_factory):
    """One full and one LoRA (rank 4) run of 2 steps."""
    torch.set_num_threads(1)  # as conftest's per-test fixture, which a module fixture runs before: same numbers
    full = fit(images, config, checkpoint_dir=tmp_path_factory.mktemp("ckpt"))
    lora = fit(images, dataclasses.replace(config, lora_rank=4))
    return {"full": full, "lora": lora}


@pytest.fixture(scope="module")
def saved(trained, config, tmp_path_factory):
    """Both runs saved as the finetune stage saves them."""
    root = tmp_path_factory.mktemp("models")
    for kind, result in trained.items():
        save_pipeline(result.pipeline, root / kind, training_patients=[3, 1, 3], pretrained=config.pretrained)
    return {kind: root / kind for kind in trained}


@pytest.fixture(scope="module")
def loaded(saved):
    """Both saved folders loaded back as the generate stage loads them."""
    return {kind: load_pipeline(folder, CPU) for kind, folder in saved.items()}


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    assert before.keys() == after.keys()
    return {key for key in before if not torch.equal(before[key], after[key])}


def generate_settings(batch_size: int) -> GenerateConfig:
    return GenerateConfig(
        sampler="dpmsolver++",
        timestep_spacing="trailing",
        inference_steps=3,
        guidance_scale=3.0,
        num_images=3,
        first_seed=0,
        batch_size=batch_size,
        noise_injection=False,
        noise_strength=1.0,
    )


def draw_scans(model_dir: Path, out: Path, config: GenerateConfig, *, prompt: str | None) -> list[Path]:
    """SEEDS drawn from `model_dir` at `prompt` as a set of one class; its PNGs in seed order."""
    drawn = generate_synthetic(model_dir, out, [ClassDraw("CNV", SEEDS)], config=config, device=CPU, prompt=prompt)
    return drawn.files["CNV"]


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_training_returns_an_sd_pipeline_on_the_pretrained_schedule(trained, loaded, config, base_scheduler, kind):
    result = trained[kind]
    pipeline = result.pipeline
    assert isinstance(pipeline, StableDiffusionPipeline) and pipeline.safety_checker is None
    assert type(pipeline.unet) is UNet2DConditionModel
    assert any("lora" in key for key in pipeline.unet.state_dict()) == (kind == "lora")  # adapters unmerged
    assert not any("lora" in key for key in loaded[kind].unet.state_dict())  # generate fuses them in
    assert len(result.losses) == config.steps and np.isfinite(result.losses).all()
    for scheduler in (pipeline.scheduler, loaded[kind].scheduler):
        assert isinstance(scheduler, DDPMScheduler)
        for key in ("beta_schedule", "prediction_type", "beta_start", "beta_end", "steps_offset"):
            assert scheduler.config[key] == base_scheduler[key], key
    assert (base_scheduler["beta_schedule"], base_scheduler["prediction_type"]) == ("scaled_linear", "epsilon")


def test_a_run_with_the_study_settings_trains_on_the_pipelines_own_schedule(
    config, images, base_scheduler, monkeypatch, caplog
):
    """finetune.beta_schedule and prediction_type `pretrained` reach the loop (its loss target) as the pipeline's
    own, unwarned."""
    seen = {}

    def record(task, loop_config, *args, **kwargs):
        seen.update(scheduler=task.scheduler, config=loop_config)
        pytest.fail("stop")

    monkeypatch.setattr(latent, "train_diffusion", record)
    with caplog.at_level(logging.WARNING), pytest.raises(pytest.fail.Exception, match="stop"):
        fit(images, dataclasses.replace(config, lora_rank=4))
    assert (seen["config"].beta_schedule, seen["config"].prediction_type) == ("scaled_linear", "epsilon")
    scheduler = seen["scheduler"].config
    assert scheduler.prediction_type == "epsilon" and scheduler.beta_schedule == "scaled_linear"
    assert not [record for record in caplog.records if record.name.startswith("synthratio")]


@pytest.mark.parametrize("key, value", [("prediction_type", "v_prediction"), ("beta_schedule", "squaredcos_cap_v2")])
def test_another_schedule_than_the_pretrained_trains_with_a_warning(config, base_scheduler, caplog, key, value):
    with caplog.at_level(logging.WARNING, logger=latent.__name__):
        scheduler = latent.latent_training_scheduler(base_scheduler, dataclasses.replace(config, **{key: value}))
    assert scheduler.config[key] == value
    assert f"finetune.{key}={value!r} differs from the pretrained model's {base_scheduler[key]!r}" in caplog.text
    assert f"finetune.{key}: pretrained keeps the model's own" in caplog.text


def test_zero_terminal_snr_on_an_epsilon_pipeline_is_refused(config, base_scheduler):
    with pytest.raises(
        ParamsError,
        match=r"finetune.zero_terminal_snr=True; expected false unless prediction_type is "
        r"v_prediction.*finetune.pretrained=.*'prediction_type': 'epsilon'"
        r".*which 'pretrained' stands for",
    ):
        latent.pretrained_schedule(dataclasses.replace(config, zero_terminal_snr=True), base_scheduler)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_vae_and_text_encoder_stay_frozen(trained, loaded, pretrained_dir, kind):
    original = StableDiffusionPipeline.from_pretrained(pretrained_dir)
    pipeline = trained[kind].pipeline
    for name in ("vae", "text_encoder"):
        assert not changed(weights(getattr(original, name)), weights(getattr(pipeline, name))), name
        assert not changed(weights(getattr(original, name)), weights(getattr(loaded[kind], name))), name
        assert not any(p.requires_grad for p in getattr(pipeline, name).parameters())
    assert changed(weights(original.unet), weights(loaded[kind].unet))


def test_full_training_changes_every_unet_level(trained, pretrained_dir):
    original = weights(StableDiffusionPipeline.from_pretrained(pretrained_dir).unet)
    moved = changed(original, weights(trained["full"].pipeline.unet))
    assert any(key.startswith("down_blocks.0.resnets") for key in moved)
    assert any(".attn2.to_k." in key for key in moved)


def test_lora_trains_only_adapters_which_load_fused_into_the_attention_projections(trained, loaded, pretrained_dir):
    original = weights(StableDiffusionPipeline.from_pretrained(pretrained_dir).unet)
    unet = weights(trained["lora"].pipeline.unet)
    adapters = {key for key in unet if "lora_" in key}
    covered = {key for key in original if key.endswith(tuple(f"{target}.weight" for target in LORA_TARGETS))}
    assert {key.replace(".lora_A.default", "").replace(".lora_B.default", "") for key in adapters} == covered
    base = {key.replace(".base_layer", ""): value for key, value in unet.items() if key not in adapters}
    assert not changed(original, base), "training may move adapter weights only"
    fused = weights(loaded["lora"].unet)
    assert changed(original, fused) == covered
    for key in covered:  # W + (alpha / r) B A with alpha = r
        down, up = (unet[key.replace(".weight", f".lora_{m}.default.weight")] for m in "AB")
        torch.testing.assert_close(fused[key], original[key] + up @ down)


def test_resumed_run_reads_cached_latents_and_matches(config, images, tmp_path, monkeypatch):
    """A run killed after step 1 of 2 resumes from its checkpoint without re-encoding, and ends the same."""
    resumable = dataclasses.replace(config, checkpoint_every=1)
    whole = fit(images, resumable, checkpoint_dir=tmp_path)  # leaves its step-1 checkpoint behind
    assert (tmp_path / LATENT_CACHE).is_file() and (tmp_path / latent.UNET_CHECKPOINT).is_dir()
    monkeypatch.setattr(latent, "encode_latents", lambda *args, **kwargs: pytest.fail("re-encoded cached latents"))
    resumed = fit(images, resumable, checkpoint_dir=tmp_path)
    assert resumed.resumed_from_step == 1 and resumed.losses == whole.losses
    assert not changed(weights(whole.pipeline.unet), weights(resumed.pipeline.unet))
    with pytest.raises(pytest.fail.Exception, match="re-encoded"):  # other scans: the cache does not apply
        fit(images[::-1].copy(), resumable, checkpoint_dir=tmp_path)


def test_flips_use_the_encoded_mirror_image(config, images):
    vae = StableDiffusionPipeline.from_pretrained(config.pretrained).vae.eval()
    cached = latent.cached_latents(vae, images[:2], CPU, checkpoint_dir=None)
    mirrored = latent.encode_latents(vae, images[:2, :, ::-1], CPU)
    assert cached.shape == (4, 4, SIZE // 8, SIZE // 8)
    assert torch.equal(cached[2:], mirrored)
    assert not torch.allclose(cached[2:], cached[:2].flip(-1))  # the VAE is not flip-equivariant


def test_scans_on_disk_are_read_in_blocks_to_the_same_latents(config, images, tmp_path, monkeypatch):
    """Scans as ScanRows of a memory map (the stage's cohort: 10 GB of CNV at 512 px on the full data set) give
    the array's fingerprint and latents (mirrored too), read a block at a time, never all at once."""
    np.save(tmp_path / "scans.npy", np.concatenate([images, images[::-1]]))
    rows = ScanRows(np.load(tmp_path / "scans.npy", mmap_mode="r"), np.arange(len(images)))
    vae = StableDiffusionPipeline.from_pretrained(config.pretrained).vae.eval()
    assert torch.equal(
        latent.cached_latents(vae, rows, CPU, checkpoint_dir=None),
        latent.cached_latents(vae, images, CPU, checkpoint_dir=None),
    )
    reads, read = [], ScanRows.__getitem__
    monkeypatch.setattr(
        ScanRows, "__getitem__", lambda self, index: reads.append(len(read(self, index))) or read(self, index)
    )
    monkeypatch.setattr(ScanRows, "__array__", lambda *args, **kwargs: pytest.fail("read every scan at once"))
    monkeypatch.setattr(latent, "ENCODE_BATCH", 4)
    assert latent._fingerprint(rows, vae) == latent._fingerprint(images, vae)
    for mirror in (False, True):
        blocks = latent.encode_latents(vae, rows, CPU, batch_size=4, mirror=mirror)
        flipped = images[:, :, ::-1] if mirror else images
        assert torch.equal(blocks, latent.encode_latents(vae, flipped, CPU))
    assert reads == [4, 2] * 3


def test_trains_on_a_seeded_choice_of_target_scans(config, images, monkeypatch):
    seen = {}

    def record(vae, chosen, *args, **kwargs):
        seen["images"] = chosen
        pytest.fail("stop")

    monkeypatch.setattr(latent, "cached_latents", record)
    labels = np.array([0, 1, 0, 0, 1, 0])
    with pytest.raises(pytest.fail.Exception, match="stop"):
        train_latent(images, labels, CLASSES, config=dataclasses.replace(config, max_images=3), device=CPU)
    cnv = images[labels == 0]
    assert len(seen["images"]) == 3 and all(any(np.array_equal(s, c) for c in cnv) for s in seen["images"])


def test_lora_folder_holds_the_adapter_alone(saved, config, base_scheduler):
    """diffusers' adapter file, the record of its base and scheduler, the training patients: no UNet, VAE or
    text-encoder weights, so at least 20x fewer bytes than the whole pipeline (SD 1.5: ~3.4 GB vs a few MB)."""
    assert {path.name for path in saved["lora"].iterdir()} == {LORA_WEIGHT_NAME_SAFE, LORA_FILE, TRAINING_PATIENTS_FILE}
    assert {"unet", "vae", "text_encoder", "model_index.json"} <= {path.name for path in saved["full"].iterdir()}
    record = json.loads((saved["lora"] / LORA_FILE).read_text())
    assert record["pretrained"] == config.pretrained
    assert record["scheduler"]["_class_name"] == "DDPMScheduler"
    assert record["scheduler"]["beta_schedule"] == base_scheduler["beta_schedule"]
    assert record["scheduler"]["prediction_type"] == base_scheduler["prediction_type"]
    for kind in saved:
        assert json.loads((saved[kind] / TRAINING_PATIENTS_FILE).read_text()) == [1, 3]
    size = {
        kind: sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) for kind, folder in saved.items()
    }
    assert size["full"] >= 20 * size["lora"], size


def test_saving_a_lora_pipeline_needs_its_base(trained, tmp_path):
    with pytest.raises(ValueError, match="expected finetune.pretrained"):
        save_pipeline(trained["lora"].pipeline, tmp_path / "model")
    assert list(tmp_path.iterdir()) == [], "no model folder and no staging folder left"


def test_generate_from_a_lora_folder_matches_the_trained_pipeline(trained, config, pretrained_dir, tmp_path):
    """Same seeds, same images from the saved folder (base + fused adapter) as from the trained pipeline in
    memory (unfused adapter). The adapter is scaled up first: two training steps move an image by a grey level."""
    trained_pipeline = copy.deepcopy(trained["lora"].pipeline)
    with torch.no_grad():
        for name, parameter in trained_pipeline.unet.named_parameters():
            if ".lora_B." in name:
                parameter.mul_(LORA_BOOST)
    save_pipeline(trained_pipeline, tmp_path / "model", pretrained=config.pretrained)
    settings = generate_settings(3)
    paths = draw_scans(tmp_path / "model", tmp_path / "out", settings, prompt=config.prompts[0])
    sampler = make_sampler(
        settings.sampler, trained_pipeline.scheduler.config, settings.timestep_spacing, clip_x0=False
    )

    def sample(pipeline: StableDiffusionPipeline) -> dict[int, np.ndarray]:
        return dict(
            sample_latent_images(
                pipeline,
                sampler,
                SEEDS,
                prompt=config.prompts[0],
                inference_steps=settings.inference_steps,
                guidance_scale=settings.guidance_scale,
                device=CPU,
                batch_size=settings.batch_size,
            )
        )

    in_memory, base = sample(trained_pipeline), sample(StableDiffusionPipeline.from_pretrained(pretrained_dir))
    for seed, path in zip(SEEDS, paths):
        with Image.open(path) as image:
            from_folder = np.asarray(image).astype(int)
        assert np.abs(from_folder - in_memory[seed]).max() <= 1, seed  # fused vs unfused adapter: float rounding
        assert np.abs(from_folder - base[seed]).mean() > 2, seed  # the adapter shows (unscaled: 0.1)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_generate_from_the_saved_folder(saved, config, tmp_path, kind):
    model = saved[kind]
    assert isinstance(load_pipeline(model, CPU), StableDiffusionPipeline)
    alone = draw_scans(model, tmp_path / "b1", generate_settings(1), prompt=config.prompts[0])
    together = draw_scans(model, tmp_path / "b3", generate_settings(3), prompt=config.prompts[0])
    arrays = []
    for one, three in zip(alone, together):
        with Image.open(one) as a, Image.open(three) as b:
            assert a.mode == b.mode == "L" and a.size == (SIZE, SIZE)
            a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == np.uint8 and np.abs(a.astype(int) - b).max() <= 1
        arrays.append(a)
    assert not np.array_equal(arrays[0], arrays[1])


def test_generate_latent_needs_a_prompt(saved, tmp_path):
    with pytest.raises(ValueError, match="needs a prompt"):
        draw_scans(saved["full"], tmp_path / "out", generate_settings(1), prompt=None)


def test_offline_hub_id_names_the_param(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    expected = r"finetune.pretrained='nobody/made-up-sd'.*local-dir.*set finetune.pretrained"
    with pytest.raises(PretrainedUnavailableError, match=expected):
        load_pretrained("nobody/made-up-sd")


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_training_is_seeded(config, images, trained, lora_rank):
    """Same config, same losses and weights: LoRA's random init comes from finetune.seed too."""
    first = trained["lora" if lora_rank else "full"]
    again = fit(images, dataclasses.replace(config, lora_rank=lora_rank))
    assert again.losses == first.losses
    assert not changed(weights(first.pipeline.unet), weights(again.pipeline.unet))


def test_process_shares_of_a_batch_make_up_the_one_process_batch():
    """Flips and prompts are drawn for the whole batch: two processes' halves are the one-process batch."""
    latents, prompts = torch.randn(8, 4, 2, 2), torch.randn(3, 5, 7)  # 4 scans then their mirrors; 3 prompts
    task = latent.latent_task(torch.nn.Linear(1, 1), None, latents, prompt_embeds=prompts)
    indices = torch.arange(4).repeat(4)
    whole = task.make_batch(indices, torch.Generator().manual_seed(0))
    halves = [
        task.make_batch(indices, torch.Generator().manual_seed(0), share) for share in (slice(0, 8), slice(8, 16))
    ]
    assert torch.equal(torch.cat([x0 for x0, _ in halves]), whole[0])
    hidden = torch.cat([kwargs["encoder_hidden_states"] for _, kwargs in halves])
    assert torch.equal(hidden, whole[1]["encoder_hidden_states"])
