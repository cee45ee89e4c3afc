"""Latent backend on a tiny Stable Diffusion pipeline saved to disk and loaded through `from_pretrained`."""

import dataclasses

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image

import synthratio.diffusion.latent as latent
from synthratio.config import FinetuneConfig, GenerateConfig
from synthratio.diffusion.latent import LATENT_CACHE, LORA_TARGETS, PretrainedUnavailableError, load_pretrained, train_latent
from synthratio.diffusion.pixel import save_pipeline
from synthratio.diffusion.sampling import generate_to_folder, load_pipeline
from synthratio.diffusion.tiny_sd import build_tiny_sd_pipeline

CPU = torch.device("cpu")
SEEDS = [4, 0, 7]
SIZE = 32


@pytest.fixture(scope="module")
def pretrained_dir(tmp_path_factory):
    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("hub") / "tiny-sd", sample_size=SIZE)


@pytest.fixture(scope="module")
def config(tiny_finetune, pretrained_dir) -> FinetuneConfig:
    return dataclasses.replace(
        tiny_finetune, backend="latent", image_size=SIZE, pretrained=str(pretrained_dir),
        prompts=("oct scan showing cnv", "retina"), beta_schedule="scaled_linear", train_timesteps=1000,
    )


CLASSES = ("CNV", "NORMAL")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, SIZE, SIZE), dtype=np.uint8)


def fit(images: np.ndarray, config: FinetuneConfig, **kwargs):
    """train_latent on `images`, all of the target class CNV."""
    return train_latent(images, np.zeros(len(images), np.int64), CLASSES, config, CPU, progress=False, **kwargs)


@pytest.fixture(scope="module")
def before_merge():
    """The UNet's state as `train_diffusion` returns it, before LoRA adapters are merged."""
    return {}


@pytest.fixture(scope="module")
def trained(config, images, tmp_path_factory, before_merge):
    """One full and one LoRA (rank 4) run of 2 steps; the LoRA run also records its pre-merge state."""
    torch.set_num_threads(1)  # as conftest's per-test fixture, which a module fixture runs before: same numbers
    monkeypatch = pytest.MonkeyPatch()
    real = latent.train_diffusion

    def spy(task, *args, **kwargs):
        result = real(task, *args, **kwargs)
        before_merge.update({key: value.clone() for key, value in result.unet.state_dict().items()})
        return result

    monkeypatch.setattr(latent, "train_diffusion", spy)
    try:
        full = fit(images, config, checkpoint_dir=tmp_path_factory.mktemp("ckpt"))
        before_merge.clear()
        lora = fit(images, dataclasses.replace(config, lora_rank=4))
    finally:
        monkeypatch.undo()
    return {"full": full, "lora": lora}


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    assert before.keys() == after.keys()
    return {key for key in before if not torch.equal(before[key], after[key])}


def generate_settings(batch_size: int) -> GenerateConfig:
    return GenerateConfig(sampler="dpmsolver++", timestep_spacing="trailing", inference_steps=3, guidance_scale=3.0,
                          num_images=3, first_seed=0, batch_size=batch_size, noise_injection=False, noise_strength=1.0)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_training_returns_a_plain_sd_pipeline(trained, config, kind):
    result = trained[kind]
    pipeline = result.pipeline
    assert isinstance(pipeline, StableDiffusionPipeline) and pipeline.safety_checker is None
    assert type(pipeline.unet) is UNet2DConditionModel
    assert not any("lora" in key for key in pipeline.unet.state_dict())
    assert len(result.losses) == config.steps and np.isfinite(result.losses).all()
    scheduler = pipeline.scheduler
    assert isinstance(scheduler, DDPMScheduler)
    assert scheduler.config.prediction_type == config.prediction_type
    assert (scheduler.config.beta_start, scheduler.config.beta_end) == (0.00085, 0.012)


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_vae_and_text_encoder_stay_frozen(trained, pretrained_dir, kind):
    original = StableDiffusionPipeline.from_pretrained(pretrained_dir)
    pipeline = trained[kind].pipeline
    for name in ("vae", "text_encoder"):
        assert not changed(weights(getattr(original, name)), weights(getattr(pipeline, name))), name
        assert not any(p.requires_grad for p in getattr(pipeline, name).parameters())
    assert changed(weights(original.unet), weights(pipeline.unet))


def test_full_training_changes_every_unet_level(trained, pretrained_dir):
    original = weights(StableDiffusionPipeline.from_pretrained(pretrained_dir).unet)
    moved = changed(original, weights(trained["full"].pipeline.unet))
    assert any(key.startswith("down_blocks.0.resnets") for key in moved)
    assert any(".attn2.to_k." in key for key in moved)


def test_lora_changes_only_adapter_covered_weights(trained, pretrained_dir, before_merge):
    original = weights(StableDiffusionPipeline.from_pretrained(pretrained_dir).unet)
    adapters = {key for key in before_merge if "lora_" in key}
    assert adapters and all(".lora_A." in key or ".lora_B." in key for key in adapters)
    base = {key.replace(".base_layer", ""): value for key, value in before_merge.items() if key not in adapters}
    assert not changed(original, base), "before the merge only adapter weights may move"
    covered = {key for key in original if key.endswith(tuple(f"{target}.weight" for target in LORA_TARGETS))}
    assert changed(original, weights(trained["lora"].pipeline.unet)) == covered


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
    cached = latent.cached_latents(vae, images[:2], CPU, None)
    mirrored = latent.encode_latents(vae, images[:2, :, ::-1], CPU)
    assert cached.shape == (4, 4, SIZE // 8, SIZE // 8)
    assert torch.equal(cached[2:], mirrored)
    assert not torch.allclose(cached[2:], cached[:2].flip(-1))  # the VAE is not flip-equivariant


def test_trains_on_a_seeded_choice_of_target_scans(config, images, monkeypatch):
    seen = {}

    def record(vae, chosen, *args):
        seen["images"] = chosen
        pytest.fail("stop")

    monkeypatch.setattr(latent, "cached_latents", record)
    labels = np.array([0, 1, 0, 0, 1, 0])
    with pytest.raises(pytest.fail.Exception, match="stop"):
        train_latent(images, labels, CLASSES, dataclasses.replace(config, max_images=3), CPU, progress=False)
    cnv = images[labels == 0]
    assert len(seen["images"]) == 3 and all(any(np.array_equal(s, c) for c in cnv) for s in seen["images"])


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_generate_from_the_saved_folder(trained, config, tmp_path, kind):
    model = tmp_path / "model"
    save_pipeline(trained[kind].pipeline, model)
    assert isinstance(load_pipeline(model, CPU), StableDiffusionPipeline)
    alone = generate_to_folder(model, tmp_path / "b1", SEEDS, generate_settings(1), CPU, progress=False, prompt=config.prompts[0])
    together = generate_to_folder(model, tmp_path / "b3", SEEDS, generate_settings(3), CPU, progress=False, prompt=config.prompts[0])
    arrays = []
    for one, three in zip(alone, together):
        with Image.open(one) as a, Image.open(three) as b:
            assert a.mode == b.mode == "L" and a.size == (SIZE, SIZE)
            a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == np.uint8 and np.abs(a.astype(int) - b).max() <= 1
        arrays.append(a)
    assert not np.array_equal(arrays[0], arrays[1])


def test_generate_latent_needs_a_prompt(trained, tmp_path):
    save_pipeline(trained["full"].pipeline, tmp_path / "model")
    with pytest.raises(ValueError, match="needs a prompt"):
        generate_to_folder(tmp_path / "model", tmp_path / "out", SEEDS, generate_settings(1), CPU, progress=False)


def test_offline_hub_id_names_the_param(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PretrainedUnavailableError, match=r"finetune.pretrained='nobody/made-up-sd'.*local-dir.*set finetune.pretrained"):
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
    task = latent.latent_task(torch.nn.Linear(1, 1), None, latents, prompts)
    indices = torch.arange(4).repeat(4)
    whole = task.make_batch(indices, torch.Generator().manual_seed(0))
    halves = [task.make_batch(indices, torch.Generator().manual_seed(0), share) for share in (slice(0, 8), slice(8, 16))]
    assert torch.equal(torch.cat([x0 for x0, _ in halves]), whole[0])
    hidden = torch.cat([kwargs["encoder_hidden_states"] for _, kwargs in halves])
    assert torch.equal(hidden, whole[1]["encoder_hidden_states"])
