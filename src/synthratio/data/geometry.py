"""How a scan of any width reaches the square the models see (prepare.geometry).

Kermany's B-scans are 496 px high and 384-1536 px wide, and width goes with class and split (1024 px: 57 % of
CNV but 34 % of NORMAL scans in the shared sample; none in the official test split). How the width shows:
- squeeze: the whole scan resized to the square: the field of view is kept, but a wide scan's layers and
  speckle are squeezed sideways, so its width is written into every pixel;
- crop: the centre square (side = the height) resized: anatomy at one aspect ratio whatever the width, the
  edges of a wide scan cut (its lateral field differs: 496 of 1024 columns vs 496 of 512);
- pad: the whole scan resized at its aspect ratio and padded to the square with its background level:
  nothing cut or distorted, but the height of the band shows the width.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from synthratio.config import GEOMETRIES


def background_level(pixels: np.ndarray) -> int:
    """The scan's background grey level: the median of its darker half (vitreous and below the choroid)."""
    return int(np.median(pixels[pixels <= np.median(pixels)])) if pixels.size else 0


def source_box(width: int, height: int, geometry: str) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the region of the scan that fills the square, in its own px; a padded
    scan's box reaches past its edges."""
    if geometry == "squeeze":
        return 0, 0, width, height
    side = min(width, height) if geometry == "crop" else max(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def to_square(pixels: np.ndarray, size: int, geometry: str) -> np.ndarray:
    """The uint8 (size, size) image of a uint8 (height, width) scan under `geometry` (Lanczos)."""
    if geometry not in GEOMETRIES:
        raise ValueError(f"geometry={geometry!r}; expected one of {list(GEOMETRIES)}")
    image = Image.fromarray(pixels)
    height, width = pixels.shape
    if geometry == "pad":
        fill = background_level(pixels)
        return np.asarray(ImageOps.pad(image, (size, size), method=Image.Resampling.LANCZOS, color=fill))
    # cropped first, so that the filter sees nothing outside the box: a scan cut to its centre square
    # gives the same image as the whole scan
    return np.asarray(image.crop(source_box(width, height, geometry)).resize((size, size), Image.Resampling.LANCZOS))


def describe(width: int, height: int, geometry: str) -> str:
    """What index.csv records of a scan's geometry: the mode and its source box, e.g. 'crop 264 0 760 496'."""
    return " ".join([geometry, *(str(v) for v in source_box(width, height, geometry))])
