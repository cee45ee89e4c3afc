"""Train a classifier with synthetic examples at ratio R; select it on real validation scans.

Data lives on the device as uint8 (real and synthetic concatenated once) and batches are gathered and
augmented there: decoding JPEGs per step (~240 img/s a core) would starve a GPU. The number
of optimizer steps is ceil(len(real train) / batch_size) per epoch at every R, so ratios differ only in
where the synthetic classes' examples come from.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import log_loss
from torch import Tensor, nn

from synthratio.classify.mixing import RatioBatchSampler
from synthratio.classify.models import build_classifier
from synthratio.config import ClassifierConfig, MixMode
from synthratio.runtime import autocast, progress_bar

if TYPE_CHECKING:
    import dvclive

__all__ = ["LabelledImages", "TrainResult", "predict_proba", "set_seed", "train_classifier"]

BRIGHTNESS = 0.1  # additive jitter, uniform in +-0.1 of the [0, 1] range
CONTRAST = 0.1  # multiplicative jitter about the image mean, uniform in 1 +- 0.1
UPLOAD_CHUNK = 4096  # images copied to the device at a time, so a memmap is never loaded whole
EVAL_BATCH_SIZE = 256  # images per forward pass when predicting


@dataclass(frozen=True)
class LabelledImages:
    """Scans with their class labels: one split of the real scans, or a detector's part."""

    images: np.ndarray  # uint8 (N, H, W), may be a np.memmap
    labels: np.ndarray  # int64 (N,)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise ValueError(f"split has {len(self.images)} images but {len(self.labels)} labels")


@dataclass
class TrainResult:
    """What one training run leaves: the selected model and every epoch's curve."""

    model: nn.Module  # the selected model (best epoch on real val accuracy, then log-loss), in eval mode
    best_epoch: int  # 1-based: history[best_epoch - 1] describes it
    history: list[dict[str, float]]  # per epoch: train_loss, val_loss, val_accuracy
    synthetic_share: float  # share of the synthetic classes' examples per batch that were synthetic (expected)


def set_seed(seed: int) -> None:
    """Seed torch, numpy and python's random, for weight init and dropout."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _check_size(name: str, images: np.ndarray, size: int) -> None:
    if images.ndim != 3 or images.shape[1:] != (size, size):
        raise ValueError(
            f"{name} images have shape {tuple(images.shape)}; classifier.image_size={size} needs (N, {size}, {size})"
        )


def _device_chunks(images: np.ndarray, size: int, device: torch.device) -> Iterator[Tensor]:
    """uint8 (N, H, W) images as device tensors of `size` images, read chunk by chunk (memmaps too)."""
    for i in range(0, len(images), size):
        yield torch.from_numpy(np.array(images[i : i + size], dtype=np.uint8)).to(device)


def _upload(arrays: list[np.ndarray], device: torch.device) -> Tensor:
    """Concatenate uint8 (N, H, W) arrays into one device tensor without a host-side copy of the whole."""
    out = torch.empty((sum(len(a) for a in arrays), *arrays[0].shape[1:]), dtype=torch.uint8, device=device)
    start = 0
    for array in arrays:
        for chunk in _device_chunks(array, UPLOAD_CHUNK, device):
            out[start : start + len(chunk)] = chunk
            start += len(chunk)
    return out


def _to_float(images: Tensor) -> Tensor:
    """uint8 (B, H, W) -> float32 (B, 1, H, W) in [0, 1], the models' input."""
    return images.unsqueeze(1).float().div_(255)


def _augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random horizontal flip and brightness/contrast jitter, per image (OCT B-scans are left-right
    symmetric up to the eye; devices differ in gain)."""
    b = x.shape[0]

    def uniform(scale: float) -> Tensor:
        return (torch.rand((b, 1, 1, 1), generator=generator, device=x.device) * 2 - 1) * scale

    flip = torch.rand((b, 1, 1, 1), generator=generator, device=x.device) < 0.5
    x = torch.where(flip, x.flip(-1), x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * (1 + uniform(CONTRAST)) + mean + uniform(BRIGHTNESS)).clamp_(0, 1)


@torch.inference_mode()
def _softmax(model: nn.Module, batches: Iterable[Tensor]) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    with autocast(device):
        return torch.cat([model(_to_float(batch)).double().softmax(dim=1).cpu() for batch in batches]).numpy()


def predict_proba(
    model: nn.Module, images: np.ndarray, device: torch.device, *, batch_size: int = EVAL_BATCH_SIZE
) -> np.ndarray:
    """(N, C) softmax of uint8 (N, H, W) scans, read batch by batch; puts the model in eval mode."""
    return _softmax(model, _device_chunks(images, batch_size, device))


def _finite_mean(losses: Tensor, first_step: int, config: ClassifierConfig) -> float:
    """Mean of an epoch's step losses; a NaN or inf one stops training, naming its step."""
    bad = (~torch.isfinite(losses)).nonzero().flatten()
    if len(bad):
        raise FloatingPointError(
            f"classifier loss is {losses[bad[0]].item()} at step {first_step + int(bad[0])}; "
            f"try a lower classifier.learning_rate than {config.learning_rate}"
            + (
                "; on CUDA it trains under bf16 autocast, so it can also be a precision overflow"
                if losses.is_cuda
                else ""
            )
        )
    return losses.mean().item()


def _evaluate(model: nn.Module, images: Tensor, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Real validation accuracy and log-loss (what selects the epoch)."""
    probs = _softmax(model, images.split(EVAL_BATCH_SIZE))
    return {
        "val_loss": float(log_loss(labels, probs, labels=list(range(num_classes)))),
        "val_accuracy": float((probs.argmax(axis=1) == labels).mean()),
    }


@dataclass
class _Fit:
    """A classifier in training: the model, its optimizer and schedule, and its examples on the device."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    images: Tensor  # uint8 (N, H, W): the real training scans, then the synthetic ones
    labels: Tensor
    augment_generator: torch.Generator

    def run_epoch(self, epoch_batches: Tensor, bar: Any) -> Tensor:
        """One optimizer step per row of batch indices; the steps' losses, still on the device."""
        self.model.train()
        losses = []
        for index in epoch_batches:
            with autocast(self.images.device):
                inputs = _augment(_to_float(self.images[index]), self.augment_generator)
                loss = F.cross_entropy(self.model(inputs), self.labels[index])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            losses.append(loss.detach())  # checked once per epoch: a per-step .item() would stall a GPU
            bar.update()
        return torch.stack(losses)


def _start_fit(
    train: LabelledImages,
    synthetic: LabelledImages,
    config: ClassifierConfig,
    *,
    num_classes: int,
    steps: int,
    seed: int,
    device: torch.device,
) -> _Fit:
    """Seeded weights, AdamW with cosine decay over `steps`, and the real and synthetic scans uploaded once."""
    set_seed(seed)
    # channels_last: ~1.5x faster training of simple_cnn on the CPU here, and the layout GPU convs prefer
    model = build_classifier(config.arch, num_classes, config.image_size, pretrained=config.pretrained)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    # cosine decay to zero: late epochs settle instead of jumping, so selection on val picks a settled model
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    augment_generator = torch.Generator(device=device).manual_seed(seed)
    images = _upload([train.images, synthetic.images], device)
    labels = torch.as_tensor(np.concatenate([train.labels, synthetic.labels]), dtype=torch.long).to(device)
    return _Fit(model, optimizer, schedule, images, labels, augment_generator)


def _log_epoch(live: dvclive.Live | None, record: dict[str, float]) -> None:
    if live is not None:
        for key, value in record.items():
            live.log_metric(key, value)
        live.next_step()


def train_classifier(
    train: LabelledImages,
    val: LabelledImages,
    config: ClassifierConfig,
    *,
    seed: int,
    device: torch.device,
    synthetic: np.ndarray | None = None,
    synthetic_labels: np.ndarray | None = None,
    synthetic_classes: Sequence[int] = (),
    ratio: int = 0,
    mode: MixMode = "replace",
    class_counts: Sequence[int] | None = None,
    live: dvclive.Live | None = None,
) -> TrainResult:
    """AdamW with cosine decay on cross-entropy over RatioBatchSampler batches (`ratio` % synthetic
    examples in `mode` for each of `synthetic_classes`, synthetic[k] of class synthetic_labels[k]; a plain
    classifier without them); after every epoch, real val accuracy (then log-loss) picks the model to keep.
    `class_counts` (default: those of train.labels) sets the batches' class make-up and the steps per epoch,
    so a scarce-data regime (train a subsample) trains as many steps on the same make-up as the full set.
    Deterministic on the CPU for a seed; runtime.autocast (bf16) on CUDA."""
    synthetic = np.zeros((0, config.image_size, config.image_size), np.uint8) if synthetic is None else synthetic
    synthetic_labels = np.zeros(0, np.int64) if synthetic_labels is None else np.asarray(synthetic_labels)
    for name, images in (("train", train.images), ("val", val.images), ("synthetic", synthetic)):
        _check_size(name, images, config.image_size)
    if len(synthetic_labels) != len(synthetic):
        raise ValueError(f"{len(synthetic)} synthetic images but {len(synthetic_labels)} synthetic_labels")
    steps_per_epoch = math.ceil((len(train.labels) if class_counts is None else sum(class_counts)) / config.batch_size)
    sampler = RatioBatchSampler(
        train.labels,
        synthetic_labels=synthetic_labels,
        synthetic_classes=synthetic_classes,
        ratio=ratio,
        batch_size=config.batch_size,
        steps=config.epochs * steps_per_epoch,
        seed=seed,
        mode=mode,
        class_counts=class_counts,
    )
    num_classes = len(sampler.plan.per_class)
    fit = _start_fit(
        train,
        LabelledImages(synthetic, synthetic_labels),
        config,
        num_classes=num_classes,
        steps=len(sampler),
        seed=seed,
        device=device,
    )
    val_images = _upload([val.images], device)

    history: list[dict[str, float]] = []
    best_key, best_state, best_epoch = (-math.inf, -math.inf), None, 0
    bar = progress_bar(
        total=len(sampler),
        desc=f"{config.arch} R={ratio}% {mode} ({sampler.synthetic_share:.0%} of classes {list(synthetic_classes)} "
        "synthetic)",
    )
    batches = iter(sampler)
    for epoch in range(1, config.epochs + 1):
        # one upload of the epoch's batch indices: a per-step copy from pageable memory would sync the GPU
        epoch_batches = torch.from_numpy(np.stack([next(batches) for _ in range(steps_per_epoch)])).to(device)
        losses = fit.run_epoch(epoch_batches, bar)
        train_loss = _finite_mean(losses, first_step=(epoch - 1) * steps_per_epoch + 1, config=config)
        record = {"train_loss": train_loss, **_evaluate(fit.model, val_images, val.labels, num_classes)}
        history.append(record)
        bar.set_postfix(epoch=epoch, **{k: f"{v:.4f}" for k, v in record.items()})
        _log_epoch(live, record)
        # select on val accuracy, then log-loss: a small val set's lowest log-loss often falls on an early,
        # underconfident epoch that predicts one class
        key = (record["val_accuracy"], -record["val_loss"])
        if best_state is None or key > best_key:
            best_key, best_epoch = key, epoch
            best_state = {k: v.detach().clone() for k, v in fit.model.state_dict().items()}
    bar.close()

    model = fit.model
    model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)  # safetensors saves contiguous tensors only
    model.eval()
    return TrainResult(model=model, best_epoch=best_epoch, history=history, synthetic_share=sampler.synthetic_share)
