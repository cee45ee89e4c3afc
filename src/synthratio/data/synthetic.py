"""Synthetic scans on disk: `<synthetic>/<CLASS>/<seed:06d>.png` (layout.synthetic_file), listed from params,
never globbed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from synthratio.config import GenerateConfig
from synthratio.layout import synthetic_file

log = logging.getLogger(__name__)


def synthetic_seeds(config: GenerateConfig, class_index: int = 0) -> list[int]:
    """The seeds of the images `generate` writes for the `class_index`-th of finetune.target_class: one
    torch.Generator seed per image. Each class has its own range: from one noise draw a class-conditional model
    makes nearly the same scan at every class, which would put look-alikes under two labels."""
    first = config.first_seed + class_index * config.num_images
    return list(range(first, first + config.num_images))


def load_synthetic(folder: Path, seeds: Sequence[int], size: int) -> np.ndarray:
    """uint8 (N, size, size) array of the listed synthetic scans, resized when generated at another size."""
    missing = [str(synthetic_file(folder, seed)) for seed in seeds if not synthetic_file(folder, seed).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} synthetic scans missing, e.g. {missing[:3]} (rerun generate)")
    images, resized_from = [], set()
    for seed in seeds:
        with Image.open(synthetic_file(folder, seed)) as image:
            gray = image.convert("L")
        if gray.size != (size, size):
            resized_from.add(gray.size)
            gray = gray.resize((size, size), Image.Resampling.LANCZOS)
        images.append(np.asarray(gray))
    if resized_from:
        log.warning(
            "synthetic scans resized from %s to %dpx: resampling can itself tell them from real scans",
            sorted(resized_from),
            size,
        )
    return np.stack(images) if images else np.zeros((0, size, size), np.uint8)
