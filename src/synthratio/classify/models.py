"""Classifiers for grayscale scans: the study's small CNN and torchvision's real model classes.

Every model takes float32 (B, 1, H, W) in [0, 1] and normalises internally (its mean and std are buffers,
saved with the weights), so callers (training, prediction, the domain-feature FID) never need to know an
arch's input statistics. `features` is the penultimate embedding: a real-only classifier's features give a
domain-specific FID.

torchvision models are trained from scratch, or start from a local weights file (`classifier.pretrained`,
e.g. torchvision's ImageNet checkpoints saved beforehand: nothing is downloaded). The RGB first convolution
becomes a 1-channel one whose kernel is the sum of the three RGB kernels: a gray scan repeated on three
channels gives the same response (the ImageNet channel statistics are averaged to one mean and std).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from synthratio.config import ARCHS
from synthratio.runtime import load_safetensors

__all__ = ["Classifier", "build_classifier", "load_weights", "vit_patch_size"]

SIMPLE_CNN_CHANNELS = (32, 64, 96, 128)  # ~185k parameters: trains at 64 px on two CPU cores
SIMPLE_CNN_DROPOUT = 0.3
SCRATCH_MEAN, SCRATCH_STD = 0.5, 0.5  # maps [0, 1] to [-1, 1]
IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD = 0.449, 0.226  # means of torchvision's ImageNet RGB mean and std
VIT_B_PATCH = 16  # ViT-B/16 (Dosovitskiy et al. 2021): its pretrained weights need 16 px patches

# torchvision arch: dotted path of its RGB stem conv, of its ImageNet head, and the dropout of our head
# (EfficientNet-B0's own classifier dropout; none elsewhere)
_TORCHVISION: dict[str, tuple[str, str, float]] = {
    "resnet18": ("conv1", "fc", 0.0),
    "resnet50": ("conv1", "fc", 0.0),
    "efficientnet_b0": ("features.0.0", "classifier", 0.2),
    "convnext_tiny": ("features.0.0", "classifier.2", 0.0),
    "vit_b_16": ("conv_proj", "heads", 0.0),
}


class Classifier(nn.Module):
    """Normalise, embed with a backbone, then a (dropout, linear) head on the embedding."""

    def __init__(
        self,
        backbone: nn.Module,
        dim: int,
        num_classes: int,
        *,
        dropout: float,
        mean: float = SCRATCH_MEAN,
        std: float = SCRATCH_STD,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))
        self.dim = dim
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def features(self, x: Tensor) -> Tensor:
        """(B, dim) penultimate embedding of (B, 1, H, W) scans in [0, 1]."""
        return self.backbone((x - self.mean) / self.std)

    def forward(self, x: Tensor) -> Tensor:
        """(B, num_classes) logits."""
        return self.head(self.features(x))


def vit_patch_size(image_size: int) -> int:
    """ViT patch: 16 px (ViT-B/16) for images of 128 px or more that 16 divides, else image_size / 8 (an
    8x8 token grid, so small images still give 64 tokens)."""
    if image_size >= 128 and image_size % VIT_B_PATCH == 0:
        return VIT_B_PATCH
    if image_size % 8 == 0:
        return image_size // 8
    raise ValueError(f"classifier.image_size={image_size}; vit_b_16 needs a multiple of 8 (of 16 from 128 px)")


def load_weights(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a .safetensors file, or from a torch file read with weights_only=True (no pickle code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"classifier.pretrained={str(path)!r}: no such weights file")
    state = (
        load_safetensors(path)
        if path.suffix == ".safetensors"
        else torch.load(path, map_location="cpu", weights_only=True)
    )
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"classifier.pretrained={str(path)!r}: expected a state dict of tensors")
    return state


def _replace(model: nn.Module, dotted: str, module: nn.Module) -> nn.Module:
    """Put `module` at `dotted` inside `model`; return what was there."""
    parent, _, name = dotted.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    old = getattr(owner, name)
    setattr(owner, name, module)
    return old


def _gray_stem(rgb: nn.Conv2d, pretrained: bool) -> nn.Conv2d:
    """A 1-channel copy of an RGB conv: pretrained kernels summed over RGB, else freshly initialised."""
    conv = nn.Conv2d(
        1, rgb.out_channels, rgb.kernel_size, rgb.stride, rgb.padding, rgb.dilation, rgb.groups, rgb.bias is not None
    )
    if pretrained:
        with torch.no_grad():
            conv.weight.copy_(rgb.weight.sum(dim=1, keepdim=True))
            if rgb.bias is not None:
                conv.bias.copy_(rgb.bias)
    return conv


def _torchvision_model(arch: str, image_size: int) -> nn.Module:
    """torchvision's class for `arch`, untrained, with its RGB stem and ImageNet head (ViT-B/16's layout with
    this image size and patch)."""
    import torchvision.models as models  # on first use: simple_cnn stages skip its ~1.3 s import

    if arch == "vit_b_16":
        return models.VisionTransformer(
            image_size=image_size,
            patch_size=vit_patch_size(image_size),
            num_layers=12,
            num_heads=12,
            hidden_dim=768,
            mlp_dim=3072,
        )
    return getattr(models, arch)(weights=None)


def _torchvision(arch: str, num_classes: int, image_size: int, pretrained: str | Path) -> Classifier:
    from torchvision.models.vision_transformer import interpolate_embeddings

    stem, head, dropout = _TORCHVISION[arch]
    model = _torchvision_model(arch, image_size)
    if pretrained:
        state = load_weights(pretrained)
        if arch == "vit_b_16":
            if vit_patch_size(image_size) != VIT_B_PATCH:
                raise ValueError(
                    f"classifier.image_size={image_size}; pretrained vit_b_16 needs a multiple of 16 >= 128"
                )
            state = interpolate_embeddings(image_size, VIT_B_PATCH, state)  # position embeddings to this grid
        skipped = model.load_state_dict(state, strict=False)
        missing = [k for k in skipped.missing_keys if not k.startswith(f"{head}.")]
        unexpected = [k for k in skipped.unexpected_keys if not k.startswith(f"{head}.")]
        if missing or unexpected:
            raise ValueError(
                f"classifier.pretrained={str(pretrained)!r} does not fit torchvision {arch}: "
                f"missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
    _replace(model, stem, _gray_stem(model.get_submodule(stem), bool(pretrained)))
    old_head = _replace(model, head, nn.Identity())
    dim = [m for m in old_head.modules() if isinstance(m, nn.Linear)][-1].in_features
    mean, std = (IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD) if pretrained else (SCRATCH_MEAN, SCRATCH_STD)
    return Classifier(model, dim, num_classes, dropout=dropout, mean=mean, std=std)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)
    )


def _simple_cnn(num_classes: int) -> Classifier:
    """The study's kind of small CNN: four conv-BN-ReLU-maxpool blocks, global average pool, dropout, linear."""
    widths = (1, *SIMPLE_CNN_CHANNELS)
    blocks = [_conv_block(c_in, c_out) for c_in, c_out in zip(widths, widths[1:])]
    backbone = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(backbone, widths[-1], num_classes, dropout=SIMPLE_CNN_DROPOUT)


def build_classifier(arch: str, num_classes: int, image_size: int, *, pretrained: str | Path = "") -> Classifier:
    """A classifier for (B, 1, image_size, image_size) scans: from scratch (weights follow torch's global RNG:
    call set_seed first), or a torchvision arch starting from the local weights file `pretrained`."""
    if arch not in ARCHS:
        raise ValueError(f"classifier.arch={arch!r}; expected one of {sorted(ARCHS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}; a classifier needs at least 2")
    if arch == "simple_cnn":
        if pretrained:
            raise ValueError(
                f"classifier.pretrained={str(pretrained)!r}: simple_cnn has no pretrained weights; "
                "use '' or a torchvision arch"
            )
        return _simple_cnn(num_classes)
    return _torchvision(arch, num_classes, image_size, pretrained)
