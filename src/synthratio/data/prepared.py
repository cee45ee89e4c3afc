"""The prepared data set on disk, written by the prepare stage and read by every later one.

`<prepared>/{split}_{size}px.npy` holds the uint8 (N, size, size) scans of a split at one size, and
`<prepared>/index.csv` one row per scan: its source and file, class, label, patient group, width, geometry,
split and `row`, its row in that split's arrays. Only this module writes or reads that layout.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from synthratio.data.kermany import SPLITS
from synthratio.runtime import replace_folder

INDEX_FILE = "index.csv"
DECODED_PREFIX = ".decoded_"  # the staging folder's arrays of every decoded scan, before the split
CHUNK_ROWS = 256  # scans copied at once from the decoded arrays to a split's (64 MB at 512 px)


class DatasetError(ValueError):
    """An input scan or folder the pipeline cannot use."""


@dataclass(frozen=True)
class PreparedSplit:
    """One split of a prepared data set at one size; element i of each array is row i of the split."""

    images: np.ndarray  # (N, size, size) uint8, memory-mapped
    labels: np.ndarray  # (N,) int64 class indices
    patients: np.ndarray  # (N,) patient group of each scan
    files: np.ndarray  # (N,) each scan's raw file, relative to its source folder of paths.raw


@dataclass(frozen=True)
class ScanRows:
    """Rows `rows` of a uint8 (N, H, W) array (a prepared memory map), read only when asked: a class of the
    full Kermany set at 512 px is 10 GB, so a stage that walks it holds CHUNK_ROWS scans at a time. Indexing
    and iteration give plain arrays; select() gives a smaller ScanRows, still unread."""

    array: np.ndarray
    rows: np.ndarray  # int64 rows of `array`, in order

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def ndim(self) -> int:
        return self.array.ndim

    def __getitem__(self, index) -> np.ndarray:
        """Like an array's: the first index picks rows (an int, slice, indices or mask), the rest pixels."""
        first, pixels = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        scans = np.asarray(self.array[self.rows[first]])
        return scans[pixels] if scans.ndim < self.ndim else scans[(slice(None), *pixels)]

    def __iter__(self) -> Iterator[np.ndarray]:
        for start in range(0, len(self.rows), CHUNK_ROWS):
            yield from self[start : start + CHUNK_ROWS]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self[:], dtype=dtype)  # every row in memory: only for what needs them all at once

    def select(self, index) -> ScanRows:
        """The rows `index` (a boolean mask, indices or a slice) picks, unread."""
        return ScanRows(self.array, self.rows[index])


def array_path(prepared: Path, split: str, size: int) -> Path:
    return prepared / f"{split}_{size}px.npy"


def staging_folder(out: Path) -> Path:
    """Where a prepared data set is written before it is swapped in whole as `out`."""
    return out.with_name(out.name + ".partial")


def decoded_arrays(out: Path, scans: int, sizes: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Fresh uint8 (scans, size, size) memory maps per size, in `out`'s staging folder, that prepare decodes
    into one scan at a time: at 512 px the full Kermany set is 22 GB, so it never sits in memory at once."""
    staging = staging_folder(out)
    shutil.rmtree(staging, ignore_errors=True)  # what a killed run left
    staging.mkdir(parents=True)
    return {
        size: np.lib.format.open_memmap(staging / f"{DECODED_PREFIX}{size}px.npy", "w+", np.uint8, (scans, size, size))
        for size in sizes
    }


def write_prepared(out: Path, frame: pd.DataFrame, decoded: dict[int, np.ndarray]) -> None:
    """Write the scans of `frame` as a prepared data set at `out`: row frame["decoded_row"] of each array of
    `decoded` (decoded_arrays, keyed by size) is that scan. The split arrays are filled CHUNK_ROWS rows at a
    time in the staging folder, which is swapped in whole, so a killed run leaves no half-written data."""
    staging = staging_folder(out)
    frame = frame.sort_values(["split", "class", "file"])
    frame["row"] = frame.groupby("split").cumcount()
    for split in SPLITS:
        rows = frame.loc[frame["split"] == split, "decoded_row"].to_numpy()
        for size, source in decoded.items():
            _copy_rows(source, rows, array_path(staging, split, size))
    frame.drop(columns=["pixel_sha256", "decoded_row"]).to_csv(staging / INDEX_FILE, index=False)
    for size in decoded:
        (staging / f"{DECODED_PREFIX}{size}px.npy").unlink()
    replace_folder(staging, out)


def _copy_rows(source: np.ndarray, rows: np.ndarray, path: Path) -> None:
    """source[rows] as the .npy file `path`, CHUNK_ROWS rows at a time."""
    if len(rows) == 0:
        np.save(path, source[:0])  # a memory map cannot be empty
        return
    target = np.lib.format.open_memmap(path, "w+", source.dtype, (len(rows), *source.shape[1:]))
    for start in range(0, len(rows), CHUNK_ROWS):
        target[start : start + CHUNK_ROWS] = source[rows[start : start + CHUNK_ROWS]]
    target.flush()


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
