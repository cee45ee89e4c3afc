"""Read a Kermany-layout scan folder into patient-disjoint uint8 arrays.

Layouts: Kaggle's `{train,val,test}/{CLASS}/*.jpeg`, Mendeley v3's `{train,test}/{CLASS}/*.jpeg`, and a flat
`{CLASS}/*.jpeg` (one pool, as the shared sample and many exports come; only `prepare.split: patient`).
File names are `<CLASS>-<patient id>-<image number>.jpeg`; the numeric id is shared across classes, so
patients are grouped by the number, and ids whose images are pixel-identical are merged into one patient.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from synthratio.config import PrepareConfig
from synthratio.data.kermany import SPLITS, WEDGE_LEVEL
from synthratio.data.prepared import DatasetError, write_prepared
from synthratio.runtime import progress_bar

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
FILE_NAME = re.compile(r"^(?P<cls>[A-Z]+)-(?P<patient>\d+)-(?P<number>\d+)$")
WEDGE_MIN_PIXELS = 64  # smaller white blobs at a corner are speckle, not a wedge


@dataclass(frozen=True)
class ScanFile:
    path: Path
    relative: str
    cls: str
    patient_id: int
    official_split: str


@dataclass
class DecodedScan:
    """What a worker returns for one file: hashes, the resized arrays, or why it is unusable."""

    file_sha256: str = ""
    pixel_sha256: str = ""
    width: int = 0
    height: int = 0
    wedge: bool = False
    resized: dict[int, np.ndarray] = field(default_factory=dict)
    problem: str = ""


def _class_roots(raw: Path, classes: Iterable[str], split: str) -> list[tuple[str, Path]]:
    """(official split, folder holding the class folders) for each split of the layout at `raw`."""
    layout = "Kermany's {train,val,test}/{CLASS}/*.jpeg or a flat {CLASS}/*.jpeg"
    if not raw.is_dir():
        raise DatasetError(f"{raw}: input folder not found; expected {layout}")
    splits = [s for s in SPLITS if (raw / s).is_dir()]
    if not splits and any((raw / cls).is_dir() for cls in classes):
        if split != "patient":
            raise DatasetError(
                f"{raw}: class folders without train/ and test/; prepare.split={split!r} keeps Kermany's official "
                "folders, so it needs them (prepare.split: patient re-splits a flat folder by patient)"
            )
        return [("", raw)]
    if "train" not in splits or "test" not in splits:
        found = sorted(p.name for p in raw.iterdir() if p.is_dir())
        raise DatasetError(
            f"{raw}: found folders {found}; expected train/ and test/ (and optionally val/), "
            f"or class folders {list(classes)}: {layout}"
        )
    return [(s, raw / s) for s in splits]


def list_scans(
    raw: Path, classes: Iterable[str], *, on_bad_file: str, split: str = "patient"
) -> tuple[list[ScanFile], Counter]:
    """Every scan of the classes in play, checked by name before any decoding starts."""
    roots = _class_roots(raw, classes, split)
    scans: list[ScanFile] = []
    skipped: Counter = Counter()
    for cls in classes:
        in_class = 0
        for official_split, root in roots:
            folder = root / cls
            if not folder.is_dir():
                if official_split == "val":  # Mendeley v3 has no val split
                    continue
                raise DatasetError(f"{folder}: class folder missing; prepare.classes asks for {cls!r}")
            for path in sorted(folder.iterdir()):
                if path.name.startswith("."):
                    continue
                problem = _name_problem(path, cls)
                if problem:
                    _bad_file(path, problem, on_bad_file, skipped)
                    continue
                match = FILE_NAME.match(path.stem)
                scans.append(ScanFile(path, str(path.relative_to(raw)), cls, int(match["patient"]), official_split))
                in_class += 1
        if in_class == 0:
            raise DatasetError(f"{raw}: no scans of class {cls!r} in any split")
    return scans, skipped


def _name_problem(path: Path, cls: str) -> str:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix {path.suffix!r}; expected one of {list(IMAGE_SUFFIXES)})"
    match = FILE_NAME.match(path.stem)
    if not match:
        return "file name has no patient id; expected <CLASS>-<patient id>-<image number>.jpeg"
    if match["cls"] != cls:
        return f"file name says class {match['cls']!r} but it lies in folder {cls!r}"
    return ""


def _bad_file(path: Path, problem: str, on_bad_file: str, skipped: Counter) -> None:
    if on_bad_file == "error":
        raise DatasetError(f"{path}: {problem} (set prepare.on_bad_file: skip to count and skip such files)")
    log.warning("skipping %s: %s", path, problem)
    skipped[problem.split(" (")[0]] += 1


def detect_wedges(image: np.ndarray) -> np.ndarray:
    """Boolean mask of pure-white regions touching an image corner (registration wedges)."""
    white = image >= WEDGE_LEVEL
    if not white.any():
        return np.zeros_like(white)
    labels, _ = ndimage.label(white)
    h, w = image.shape
    corner_labels = {labels[0, 0], labels[0, w - 1], labels[h - 1, 0], labels[h - 1, w - 1]} - {0}
    mask = np.isin(labels, list(corner_labels))
    return mask if mask.sum() >= WEDGE_MIN_PIXELS else np.zeros_like(white)


def mask_wedges(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill wedge pixels with the background level: the median of the image's darker half."""
    rest = image[~mask]
    background = np.median(rest[rest <= np.median(rest)]) if rest.size else 0
    filled = image.copy()
    filled[mask] = np.uint8(background)
    return filled


def decode_scan(path: Path, sizes: tuple[int, ...], mask: bool) -> DecodedScan:
    """Decode, check, optionally mask wedges and resize one scan; never raises for a bad file."""
    data = path.read_bytes()
    result = DecodedScan(file_sha256=hashlib.sha256(data).hexdigest())
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened
            if image.mode in ("RGB", "RGBA"):
                rgb = np.asarray(image.convert("RGB"))
                if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                    result.problem = "colour image; expected grayscale OCT"
                    return result
                image = image.convert("L")
            if image.mode != "L":
                result.problem = f"image mode {image.mode!r}; expected 8-bit grayscale 'L'"
                return result
            pixels = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        result.problem = f"unreadable or truncated image ({error})"
        return result
    result.height, result.width = pixels.shape
    if min(pixels.shape) < max(sizes):
        result.problem = f"image {result.width}x{result.height} is smaller than the target size {max(sizes)}"
        return result
    result.pixel_sha256 = hashlib.sha256(pixels.tobytes()).hexdigest()
    wedge = detect_wedges(pixels)
    result.wedge = bool(wedge.any())
    if mask and result.wedge:
        pixels = mask_wedges(pixels, wedge)
    source = Image.fromarray(pixels)
    result.resized = {size: np.asarray(source.resize((size, size), Image.Resampling.LANCZOS)) for size in sizes}
    return result


def _decode_job(job: tuple[Path, tuple[int, ...], bool]) -> DecodedScan:
    return decode_scan(*job)


def _union_patients(frame: pd.DataFrame) -> pd.Series:
    """Patient group per row: numeric ids linked by a shared (pixel-identical) image become one
    patient, named by the smallest id among them."""
    parent: dict[int, int] = {int(pid): int(pid) for pid in frame["patient_id"].unique()}

    def find(pid: int) -> int:
        while parent[pid] != pid:
            parent[pid] = parent[parent[pid]]
            pid = parent[pid]
        return pid

    for ids in frame.groupby("pixel_sha256")["patient_id"].unique():
        roots = sorted(find(int(pid)) for pid in ids)
        for root in roots[1:]:
            parent[root] = roots[0]  # the smaller id stays the root, so it names the group
    return frame["patient_id"].map(lambda pid: find(int(pid)))


def assign_patient_splits(
    groups: pd.DataFrame, *, val_fraction: float, test_fraction: float, seed: int
) -> dict[int, str]:
    """Patient-disjoint split, stratified by each patient's set of classes so class shares hold in every split."""
    rng = np.random.default_rng(seed)
    signature = groups.groupby("patient_group")["class"].apply(lambda c: "+".join(sorted(set(c))))
    assignment: dict[int, str] = {}
    for _, patients in sorted(signature.groupby(signature)):
        ids = np.array(sorted(patients.index))
        rng.shuffle(ids)
        n_test = int(round(len(ids) * test_fraction))
        n_val = int(round(len(ids) * val_fraction))
        for i, pid in enumerate(ids):
            assignment[int(pid)] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assignment


def prepare_dataset(raw: Path, out: Path, config: PrepareConfig, *, sizes: tuple[int, ...]) -> dict:
    """Index, deduplicate, split and resize every scan; write the prepared data set to `out`
    (prepared.write_prepared) and return the summary that becomes metrics/data.json."""
    sizes = tuple(sorted(set(sizes)))
    started = time.perf_counter()
    scans, skipped = list_scans(raw, config.classes, on_bad_file=config.on_bad_file, split=config.split)
    decoded = _decode_all(scans, sizes, config)
    decode_seconds = time.perf_counter() - started
    frame, arrays = _usable_scans(raw, scans, decoded, sizes, config, skipped)
    frame["patient_group"] = _union_patients(frame)
    keep, stats = _deduplicate(frame)
    keep, leaks = _assign_splits(frame, keep, config)
    arrays = {size: array[keep.to_numpy()] for size, array in arrays.items()}
    frame = frame[keep].reset_index(drop=True)  # row i of frame is row i of every array

    summary = _summary(frame, stats, leaks, skipped, decode_seconds, len(scans), sizes, config)
    write_prepared(out, frame, arrays)
    return summary


def _decode_all(scans: list[ScanFile], sizes: tuple[int, ...], config: PrepareConfig) -> list[DecodedScan]:
    """decode_scan of every scan, in prepare.workers processes (0: one per core)."""
    workers = config.workers or os.cpu_count() or 1
    jobs = [(scan.path, sizes, config.mask_wedges) for scan in scans]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        decoding = pool.map(_decode_job, jobs, chunksize=16)
        return list(progress_bar(decoding, total=len(jobs), desc="prepare: decode", unit="scan"))


def _usable_scans(
    raw: Path,
    scans: list[ScanFile],
    decoded: list[DecodedScan],
    sizes: tuple[int, ...],
    config: PrepareConfig,
    skipped: Counter,
) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """An index row per usable scan and, per size, its resized images stacked in the same order; an unusable
    scan is skipped (counted in `skipped`) or raises, as prepare.on_bad_file says."""
    rows, arrays = [], {size: [] for size in sizes}
    for scan, result in zip(scans, decoded):
        if result.problem:
            _bad_file(scan.path, result.problem, config.on_bad_file, skipped)
            continue
        rows.append(
            {
                "file": scan.relative,
                "sha256": result.file_sha256,
                "pixel_sha256": result.pixel_sha256,
                "class": scan.cls,
                "label": config.classes.index(scan.cls),
                "patient_id": scan.patient_id,
                "official_split": scan.official_split,
                "width": result.width,
                "height": result.height,
                "wedge": result.wedge,
            }
        )
        for size in sizes:
            arrays[size].append(result.resized[size])
    if not rows:
        raise DatasetError(f"{raw}: no usable scans of classes {list(config.classes)}")
    return pd.DataFrame(rows), {size: np.stack(images) for size, images in arrays.items()}


def _assign_splits(frame: pd.DataFrame, keep: pd.Series, config: PrepareConfig) -> tuple[pd.Series, int]:
    """Fill frame's `split` column as prepare.split says; return the rows kept (less the official split's
    leaks) and the number of leaks dropped."""
    if config.split == "patient":
        splits = assign_patient_splits(
            frame[keep], val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed
        )
        frame["split"] = frame["patient_group"].map(splits)
        return keep, 0
    frame["split"] = frame["official_split"]
    keep, leaks = _drop_leaks(frame, keep)
    # Kaggle's val holds 16 scans and Mendeley v3 has none: too few to select models on, so val also
    # takes val_fraction of the train patients.
    train = keep & (frame["split"] == "train")
    moved = assign_patient_splits(frame[train], val_fraction=config.val_fraction, test_fraction=0.0, seed=config.seed)
    frame.loc[train, "split"] = frame.loc[train, "patient_group"].map(moved)
    return keep, leaks


def _deduplicate(frame: pd.DataFrame) -> tuple[pd.Series, dict[str, int]]:
    """Keep one row per distinct image; drop every copy of an image filed under two classes."""
    classes_per_image = frame.groupby("pixel_sha256")["class"].transform("nunique")
    conflicting = classes_per_image > 1
    duplicate = frame.duplicated("pixel_sha256", keep="first") & ~conflicting
    keep = ~(conflicting | duplicate)
    stats = {
        "duplicates_dropped": int(duplicate.sum()),
        "conflicting_labels_dropped": int(conflicting.sum()),
        "same_name_different_image": int(
            frame.assign(name=frame["file"].map(lambda f: Path(f).name))
            .groupby("name")["pixel_sha256"]
            .nunique()
            .gt(1)
            .sum()
        ),
    }
    return keep, stats


def _drop_leaks(frame: pd.DataFrame, keep: pd.Series) -> tuple[pd.Series, int]:
    """Official split: a patient stays only in the last of test, val, train that holds them (the published
    split shares patients between train and test); return the rows kept and the number dropped."""
    leak = pd.Series(False, index=frame.index)
    for held_out, earlier in (("test", ("train", "val")), ("val", ("train",))):
        patients = set(frame.loc[keep & (frame["split"] == held_out), "patient_group"])
        leak |= keep & frame["split"].isin(earlier) & frame["patient_group"].isin(patients)
    return keep & ~leak, int(leak.sum())


def _summary(
    frame: pd.DataFrame, stats: dict, leaks: int, skipped: Counter, seconds: float, listed: int, sizes, config
) -> dict:
    counts = {
        split: {cls: int(((frame["split"] == split) & (frame["class"] == cls)).sum()) for cls in config.classes}
        for split in SPLITS
    }
    patients = {split: int(frame.loc[frame["split"] == split, "patient_group"].nunique()) for split in SPLITS}
    per_patient_splits = frame.groupby("patient_group")["split"].nunique()
    return {
        "scans": int(len(frame)),
        "patients": int(frame["patient_group"].nunique()),
        "patient_ids": int(frame["patient_id"].nunique()),
        "counts": counts,
        "patients_per_split": patients,
        "patients_in_several_splits": int((per_patient_splits > 1).sum()),
        **stats,
        "leaks_removed": leaks,
        "skipped": dict(skipped),
        "scans_with_wedges": int(frame["wedge"].sum()),
        "wedges_masked": bool(config.mask_wedges),
        "sizes": list(sizes),
        "scans_per_second": round(listed / seconds, 1) if seconds > 0 else None,
    }
