"""Listed image files to feature vectors through clean-fid (Parmar et al. 2022, "On Aliased Resizing and
Surprising Subtleties in GAN Evaluation"), with a real-only classifier or clean-fid's own Inception.

clean-fid reads the files with PIL, converts every image to RGB and hands float32 (B, 3, H, W) batches in
[0, 255] to a feature function; in clean mode it first resizes to 299 px for Inception. Domain features
skip that resize: the classifier sees scans the way it was trained on them.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from cleanfid import fid
from PIL import Image
from torch import nn

from synthratio.runtime import progress_shown

FeatureFn = Callable[[torch.Tensor], torch.Tensor]

# Where clean-fid loads its Inception weights in clean mode, hard-coded in
# cleanfid.features.feature_extractor (not tempfile.gettempdir()); it downloads the file when absent.
CLEANFID_INCEPTION = Path("./" if platform.system() == "Windows" else "/tmp") / "inception-2015-12-05.pt"


def classifier_feature_fn(model: nn.Module, image_size: int, device: torch.device) -> FeatureFn:
    """Wrap a classifier's penultimate embedding `model.features` as a clean-fid feature extractor.

    The returned function takes float32 (B, 3, H, W) in [0, 255], keeps channel 0 (scans are grayscale,
    so the three channels are equal), resizes to image_size x image_size (antialiased bilinear) when the
    images have another size, scales to [0, 1] and returns float32 (B, D). The model is moved to device
    and put in eval mode.
    """
    model.to(device).eval()

    @torch.no_grad()
    def feature_fn(images: torch.Tensor) -> torch.Tensor:
        x = images[:, :1].to(device=device, dtype=torch.float32)
        if x.shape[-2:] != (image_size, image_size):
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
        return model.features(x / 255.0).float()

    return feature_fn


def _keep_size(image: np.ndarray) -> np.ndarray:
    """clean-fid resize that leaves the image as it is."""
    return image


def check_one_size(files: Sequence[Path], name: str) -> tuple[int, int]:
    """(width, height) shared by every file (read from the headers only), else ValueError naming the set,
    each size found with its count, and the first file of the rarest size."""
    if not files:
        raise ValueError(f"{name}: no images to read")
    by_size: dict[tuple[int, int], list[Path]] = {}
    for file in files:
        with Image.open(file) as image:
            by_size.setdefault(image.size, []).append(Path(file))
    if len(by_size) > 1:
        found = ", ".join(f"{w}x{h} px: {len(group)} images" for (w, h), group in sorted(by_size.items()))
        odd = min(by_size.values(), key=len)[0]
        raise ValueError(f"{name} mixes image sizes ({found}), e.g. {odd}; expected one size")
    return next(iter(by_size))


def read_scans(files: Sequence[Path], name: str) -> np.ndarray:
    """uint8 (N, H, W) grayscale array of the listed files, in order.

    Raises FileNotFoundError naming the folder when none of the files exists (an empty or missing folder)
    or naming the missing ones, and ValueError (check_one_size) when they differ in size.
    """
    missing = [Path(f) for f in files if not Path(f).is_file()]
    if missing and len(missing) == len(files):
        folders = sorted({str(f.parent) for f in missing})
        raise FileNotFoundError(
            f"{name}: {', '.join(folders)} holds none of the {len(files)} listed images, e.g. {missing[0].name}"
        )
    if missing:
        raise FileNotFoundError(
            f"{name}: {len(missing)} of {len(files)} listed images missing, e.g. {[str(f) for f in missing[:3]]}"
        )
    check_one_size(files, name)
    scans = []
    for file in files:
        with Image.open(file) as image:
            scans.append(np.asarray(image.convert("L")))
    return np.stack(scans)


def file_features(
    files: Sequence[Path],
    feature_fn: FeatureFn,
    device: torch.device,
    *,
    batch_size: int = 64,
    workers: int = 0,
    inception_resize: bool = False,
    name: str = "images for features",
) -> np.ndarray:
    """Features (N, D) of the listed images, in order, through clean-fid's reader (PIL, RGB, float [0, 255]).

    Images reach feature_fn at their own size unless inception_resize, which applies clean-fid's clean
    resize to 299 px (for its Inception). workers: processes that decode and resize (a DataLoader's
    num_workers; 0 decodes in this process). clean-fid's tqdm bar, named after the set, shows where
    runtime.progress_shown() says. Raises ValueError naming the set (name) and a file when the sizes differ.
    """
    check_one_size(files, name)
    return fid.get_files_features(
        [str(f) for f in files],
        model=feature_fn,
        num_workers=workers,
        batch_size=batch_size,
        device=device,
        mode="clean",
        custom_fn_resize=None if inception_resize else _keep_size,
        description=name,
        verbose=progress_shown(),  # clean-fid's own tqdm bar, shown only where ours would be
    )


def write_png_folder(images: np.ndarray, folder: Path) -> list[Path]:
    """Write uint8 (N, H, W) grayscale images to folder/{i:06d}.png, so clean-fid can read them; returns
    the files in order.

    The folder must be new or empty: stale images from an earlier call would join the set.
    """
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) == 0:
        raise ValueError(f"images: {images.dtype} array of shape {images.shape}; expected uint8 (N, H, W) with N >= 1")
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty; write_png_folder needs a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{i:06d}.png" for i in range(len(images))]
    for file, image in zip(files, images):
        Image.fromarray(image).save(file)
    return files


def inception_available(weights: Path | None) -> bool:
    """Whether clean-fid's Inception can run offline from the weights file given.

    True when weights names an existing file; it is then symlinked to CLEANFID_INCEPTION (where clean-fid
    reads it) unless that already is the same file. None or a missing file gives False without touching
    anything, even when some file already sits at CLEANFID_INCEPTION: the metrics must not depend on an
    untracked file in /tmp. Never downloads.
    """
    if weights is None or not weights.is_file():
        return False
    target = CLEANFID_INCEPTION
    if not (target.exists() and os.path.samefile(target, weights)):
        staging = target.with_name(f".{target.name}.{os.getpid()}")
        staging.unlink(missing_ok=True)
        staging.symlink_to(weights.resolve())
        os.replace(staging, target)  # atomic: a concurrent reader sees the old file or the new link
    return True
