"""Synthetic scans on disk: `<synthetic>/<CLASS>/<seed:06d>.png` (layout.synthetic_file), listed from params,
never globbed. Beside the class folders, a set records how it was drawn: `scheduler/` (the sampler, as diffusers'
`save_pretrained` writes it) and `sampling.json` (the sampling call's settings that the scheduler config does not
hold); neither is ever a class, and no class name (config.CLASS_NAMES) is one of them."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from synthratio.config import GenerateConfig
from synthratio.layout import synthetic_file

log = logging.getLogger(__name__)

SCHEDULER_FOLDER = "scheduler"  # the sampler the set was drawn with: <set>/scheduler/scheduler_config.json
SAMPLING_FILE = "sampling.json"  # steps, guidance, seeds, noise injection, model digest
NOT_CLASSES = frozenset({SCHEDULER_FOLDER, SAMPLING_FILE})  # entries of a set that are no class folder


def sampling_settings(folder: Path) -> dict:
    """The sampling settings (sampling.json) of the set of synthetic scans in `folder`."""
    path = Path(folder) / SAMPLING_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no sampling record beside these synthetic scans (rerun generate)")
    return json.loads(path.read_text())


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
