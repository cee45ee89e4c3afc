import dataclasses
import json

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler

from synthratio.config import FinetuneConfig
from synthratio.diffusion import pixel
from synthratio.diffusion.pipelines import save_pipeline
from synthratio.diffusion.pixel import build_unet, train_pixel
from synthratio.diffusion.schedules import build_training_scheduler
from synthratio.diffusion.training import TrainedUNet
from synthratio.layout import CLASSES_FILE

CPU = torch.device("cpu")
FIXED_LOSSES = [1.2530, 1.0968]  # tiny config, seed 0, CPU


@pytest.fixture
def config(tiny_finetune) -> FinetuneConfig:
    return tiny_finetune


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (8, 16, 16), dtype=np.uint8)


def test_unet_keeps_shape(config):
    unet = build_unet(config)
    out = unet(torch.zeros(2, 1, 16, 16), torch.tensor([0, 99])).sample
    assert out.shape == (2, 1, 16, 16)


def test_unet_init_is_seeded(config):
    first, second = build_unet(config), build_unet(config)
    other = build_unet(dataclasses.replace(config, seed=1))
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), other.parameters()))


def test_training_scheduler_follows_config(config):
    scheduler = build_training_scheduler(dataclasses.replace(config, prediction_type="v_prediction"))
    assert isinstance(scheduler, DDPMScheduler)
    assert scheduler.config.num_train_timesteps == 100
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.clip_sample is False


CLASSES = ("CNV", "NORMAL")


@pytest.fixture
def labels() -> np.ndarray:
    return np.array([0, 1] * 4, dtype=np.int64)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_training_runs(config, images, labels, prediction_type):
    run = dataclasses.replace(config, prediction_type=prediction_type)
    result = train_pixel(images, labels, CLASSES, config=run, device=CPU)
    assert isinstance(result.pipeline, DDPMPipeline)
    assert len(result.losses) == config.steps
    assert np.isfinite(result.losses).all()
    assert result.images_per_second > 0
    assert result.classes == ()


def test_training_is_seeded(config, images, labels):
    """Fixed numbers: a change to the draws, the init or the loss shows up here."""
    first = train_pixel(images, labels, CLASSES, config=config, device=CPU).losses
    again = train_pixel(images, labels, CLASSES, config=config, device=CPU).losses
    assert first == again
    assert first == pytest.approx(FIXED_LOSSES, abs=1e-3)


def capture_task(monkeypatch) -> dict:
    """Run train_pixel up to the loop and keep the task it builds."""
    seen = {}

    def fake_train(task, config, device, **kwargs):
        seen["task"] = task
        return TrainedUNet(unet=task.unet, losses=[], seconds=1.0, images_per_second=1.0, resumed_from_step=0)

    monkeypatch.setattr(pixel, "train_diffusion", fake_train)
    return seen


def all_items(task) -> tuple[torch.Tensor, dict]:
    return task.make_batch(torch.arange(task.items), torch.Generator().manual_seed(0))


def test_unconditional_learns_the_target_class_only(config, labels, monkeypatch):
    images = np.where(labels[:, None, None] == 0, 0, 255).astype(np.uint8) * np.ones((1, 16, 16), np.uint8)
    seen = capture_task(monkeypatch)
    train_pixel(images, labels, CLASSES, config=config, device=CPU)
    x0, kwargs = all_items(seen["task"])
    assert seen["task"].items == 4
    assert torch.equal(x0, torch.full((4, 1, 16, 16), -1.0))  # CNV scans are black, mapped to -1
    assert kwargs == {}
    assert seen["task"].unet.config.num_class_embeds is None


def test_class_conditional_learns_every_class_with_labels(config, images, labels, monkeypatch):
    seen = capture_task(monkeypatch)
    conditional = dataclasses.replace(config, class_conditional=True)
    result = train_pixel(images, labels, CLASSES, config=conditional, device=CPU)
    x0, kwargs = all_items(seen["task"])
    assert seen["task"].items == 8 and x0.shape == (8, 1, 16, 16)
    assert torch.equal(kwargs["class_labels"], torch.from_numpy(labels))
    assert seen["task"].unet.config.num_class_embeds == 2
    assert result.classes == CLASSES


def test_label_dropout_trains_a_null_class_on_that_share_of_labels(config, images, labels, monkeypatch):
    seen = capture_task(monkeypatch)
    dropout = dataclasses.replace(config, class_conditional=True, label_dropout=0.25)
    train_pixel(images, labels, CLASSES, config=dropout, device=CPU)
    task = seen["task"]
    assert task.unet.config.num_class_embeds == 3  # CNV, NORMAL and the null class 2
    many = torch.arange(8).repeat(500)
    _, kwargs = task.make_batch(many, torch.Generator().manual_seed(0))
    null = kwargs["class_labels"] == 2
    assert 0.22 < null.float().mean() < 0.28
    kept = torch.from_numpy(labels)[many][~null]
    assert torch.equal(kwargs["class_labels"][~null], kept)  # the rest keep their own class
    # each process's share of a batch is the same draw as in the whole batch
    _, half = task.make_batch(many, torch.Generator().manual_seed(0), slice(2000, None))
    assert torch.equal(half["class_labels"], kwargs["class_labels"][2000:])


def test_max_images_is_a_seeded_choice(config, images, labels, monkeypatch):
    seen = capture_task(monkeypatch)
    capped = dataclasses.replace(config, class_conditional=True, max_images=5)
    train_pixel(images, labels, CLASSES, config=capped, device=CPU)
    first, _ = all_items(seen["task"])
    train_pixel(images, labels, CLASSES, config=capped, device=CPU)
    assert seen["task"].items == 5
    assert torch.equal(first, all_items(seen["task"])[0])
    train_pixel(images, labels, CLASSES, config=dataclasses.replace(capped, seed=1), device=CPU)
    assert not torch.equal(first, all_items(seen["task"])[0])


def test_batches_are_scaled_and_flipped_by_the_loop_generator(config, labels, monkeypatch):
    ramp = np.tile(np.arange(16, dtype=np.uint8) * 17, (8, 16, 1))  # 0 at the left edge, 255 at the right
    seen = capture_task(monkeypatch)
    train_pixel(ramp, labels, CLASSES, config=config, device=CPU)
    x0, _ = seen["task"].make_batch(torch.zeros(64, dtype=torch.long), torch.Generator().manual_seed(0))
    left = x0[:, 0, 0, 0]
    assert set(left.tolist()) == {-1.0, 1.0}  # both orientations occur
    assert torch.equal(x0[left == 1.0], x0[left == -1.0][:1].flip(-1).expand_as(x0[left == 1.0]))


@pytest.mark.parametrize(
    "bad",
    [np.zeros((8, 32, 32), np.uint8), np.zeros((8, 1, 16, 16), np.uint8), np.zeros((8, 16, 16), np.float32)],
    ids=["size", "channels", "dtype"],
)
def test_wrong_images_raise_naming_shape(config, labels, bad):
    with pytest.raises(ValueError, match=str(bad.shape).replace("(", r"\(").replace(")", r"\)")):
        train_pixel(bad, labels, CLASSES, config=config, device=CPU)


@pytest.mark.parametrize(
    "bad", [np.zeros(7, np.int64), np.full(8, 2, np.int64), np.zeros(8, np.float32)], ids=["length", "range", "dtype"]
)
def test_wrong_labels_raise(config, images, bad):
    with pytest.raises(ValueError, match="training labels"):
        train_pixel(images, bad, CLASSES, config=config, device=CPU)


def test_no_target_images_raise(config, images):
    with pytest.raises(ValueError, match="no training images of class 'CNV'"):
        train_pixel(images, np.ones(8, np.int64), CLASSES, config=config, device=CPU)


@pytest.mark.parametrize("class_conditional", [False, True])
def test_save_load_round_trip(config, images, labels, tmp_path, class_conditional):
    run = dataclasses.replace(config, class_conditional=class_conditional)
    result = train_pixel(images, labels, CLASSES, config=run, device=CPU)
    out = tmp_path / "model"
    save_pipeline(result.pipeline, out, classes=result.classes)
    save_pipeline(result.pipeline, out, classes=result.classes)  # replaces an existing folder
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    loaded = DDPMPipeline.from_pretrained(out)
    saved, restored = result.pipeline.unet.state_dict(), loaded.unet.state_dict()
    assert saved.keys() == restored.keys()
    assert all(torch.equal(saved[key], restored[key]) for key in saved)
    assert loaded.scheduler.config.beta_schedule == config.beta_schedule
    if class_conditional:
        assert json.loads((out / CLASSES_FILE).read_text()) == list(CLASSES)
    else:
        assert not (out / CLASSES_FILE).exists()


def test_process_shares_of_a_batch_make_up_the_one_process_batch(config, labels, monkeypatch):
    """Flips are drawn for the whole batch: two processes' halves are the batch one process trains on."""
    seen = capture_task(monkeypatch)
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16), dtype=np.uint8)
    train_pixel(images, labels, CLASSES, config=config, device=CPU)
    indices = torch.arange(seen["task"].items).repeat(32)[:32]
    whole, _ = seen["task"].make_batch(indices, torch.Generator().manual_seed(0))
    halves = [
        seen["task"].make_batch(indices, torch.Generator().manual_seed(0), share)[0]
        for share in (slice(0, 16), slice(16, 32))
    ]
    assert torch.equal(torch.cat(halves), whole)
