"""The prepared data set on disk, written by the prepare stage and read by every later one.

`<prepared>/{split}_{size}px.npy` holds the uint8 (N, size, size) scans of a split at one size, and
`<prepared>/index.csv` one row per scan: its source and file, class, label, patient group, width, geometry,
split and `row`, its row in that split's arrays. Only this module writes or reads that layout.
"""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from synthratio.data.kermany import SPLITS
from synthratio.runtime import replace_folder

INDEX_FILE = "index.csv"


class DatasetError(ValueError):
    """An input scan or folder the pipeline cannot use."""


@dataclass(frozen=True)
class PreparedSplit:
    """One split of a prepared data set at one size; element i of each array is row i of the split."""

    images: np.ndarray  # (N, size, size) uint8, memory-mapped
    labels: np.ndarray  # (N,) int64 class indices
    patients: np.ndarray  # (N,) patient group of each scan
    files: np.ndarray  # (N,) each scan's raw file, relative to its source folder of paths.raw


def array_path(prepared: Path, split: str, size: int) -> Path:
    return prepared / f"{split}_{size}px.npy"


def write_prepared(out: Path, frame: pd.DataFrame, arrays: dict[int, np.ndarray]) -> None:
    """Write the scans of `frame` (row i of it is row i of every array in `arrays`, keyed by size) as a
    prepared data set at `out`: into a sibling `<out>.partial` folder, swapped in whole, so a killed run
    leaves no half-written data."""
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    frame = frame.sort_values(["split", "class", "file"])
    frame["row"] = frame.groupby("split").cumcount()
    for split in SPLITS:
        rows = frame.index[frame["split"] == split].to_numpy()
        for size, array in arrays.items():
            np.save(array_path(staging, split, size), array[rows])
    frame.drop(columns=["pixel_sha256"]).to_csv(staging / INDEX_FILE, index=False)
    replace_folder(staging, out)


def load_prepared(prepared: Path, split: str, size: int) -> PreparedSplit:
    """One split of the prepared data set at `size` px: its images memory-mapped, the rest from index.csv."""
    path = array_path(prepared, split, size)
    if not path.is_file():
        available = sorted(p.name for p in prepared.glob("*px.npy")) if prepared.is_dir() else []
        raise FileNotFoundError(
            f"{path}: no prepared array for split {split!r} at {size}px; found {available} (rerun prepare)"
        )
    index = _read_index(prepared / INDEX_FILE)
    rows = index.loc[index["split"] == split].sort_values("row")
    labels = rows["label"].to_numpy(dtype=np.int64, copy=True)  # pandas 3 hands out read-only views
    images = np.load(path, mmap_mode="r")
    if len(images) != len(labels):
        raise DatasetError(
            f"{path}: {len(images)} images but index.csv lists {len(labels)} for split {split!r} (rerun prepare)"
        )
    patients, files = rows["patient_group"].to_numpy(), rows["file"].to_numpy()
    return PreparedSplit(images=images, labels=labels, patients=patients, files=files)


def _read_index(path: Path) -> pd.DataFrame:
    """index.csv, read once per process however many splits a stage loads (train, val and test each ask)."""
    stat = path.stat()  # any of the three tells a rewritten index (mtimes can be coarse, inodes reused)
    return _read_index_version(path.resolve(), stat.st_ino, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_index_version(path: Path, inode: int, mtime_ns: int, size: int) -> pd.DataFrame:
    return pd.read_csv(path)
