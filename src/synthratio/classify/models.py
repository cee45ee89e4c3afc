"""Classifiers trained from scratch on grayscale scans.

Every model takes float32 (B, 1, H, W) in [0, 1] and normalises internally, so callers (training,
prediction, the domain-feature FID) never need to know an arch's input statistics. `features` is the
penultimate embedding: a real-only classifier's features give a domain-specific FID.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn
from torchvision.models import resnet18

from synthratio.config import ARCHS

__all__ = ["ARCHS", "Classifier", "build_classifier"]

SIMPLE_CNN_CHANNELS = (32, 64, 96, 128)  # ~185k parameters: trains at 64 px on two CPU cores
SIMPLE_CNN_DROPOUT = 0.3


class Classifier(nn.Module):
    """Normalise, embed with a backbone, then a (dropout, linear) head on the embedding."""

    def __init__(self, backbone: nn.Module, dim: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes))
        self.dim = dim

    def features(self, x: Tensor) -> Tensor:
        """(B, dim) penultimate embedding of (B, 1, H, W) scans in [0, 1]."""
        return self.backbone((x - 0.5) / 0.5)

    def forward(self, x: Tensor) -> Tensor:
        """(B, num_classes) logits."""
        return self.head(self.features(x))


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)
    )


def _simple_cnn(num_classes: int) -> Classifier:
    """The study's kind of small CNN: four conv-BN-ReLU-maxpool blocks, global average pool, dropout, linear."""
    widths = (1, *SIMPLE_CNN_CHANNELS)
    blocks = [_conv_block(c_in, c_out) for c_in, c_out in zip(widths, widths[1:])]
    backbone = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(backbone, widths[-1], num_classes, SIMPLE_CNN_DROPOUT)


def _resnet18(num_classes: int) -> Classifier:
    """torchvision's ResNet-18, untrained, with a 1-channel stem; its fc becomes the Classifier head."""
    backbone = resnet18(weights=None)
    backbone.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    dim = backbone.fc.in_features
    backbone.fc = nn.Identity()
    return Classifier(backbone, dim, num_classes, dropout=0.0)


_BUILDERS: dict[str, Callable[[int], Classifier]] = {"simple_cnn": _simple_cnn, "resnet18": _resnet18}


def build_classifier(arch: str, num_classes: int) -> Classifier:
    """A freshly initialised classifier (weights follow torch's global RNG: call set_seed first)."""
    if arch not in _BUILDERS:
        raise ValueError(f"classifier.arch={arch!r}; expected one of {sorted(ARCHS)}")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}; a classifier needs at least 2")
    return _BUILDERS[arch](num_classes)
