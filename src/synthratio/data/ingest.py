"""Decode the surveyed scans of every source into patient-disjoint uint8 arrays (data/sources.py lists them).

Patients are grouped by id across sources (Kermany's numeric ids are shared across classes and samples), and
ids whose images are pixel-identical are merged into one patient.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from scipy import ndimage

from synthratio.config import PrepareConfig
from synthratio.data.audit import shortcut_audit
from synthratio.data.dicom import DicomError, is_dicom, read_frame
from synthratio.data.geometry import background_level, describe, to_square
from synthratio.data.kermany import SPLITS, WEDGE_LEVEL
from synthratio.data.prepared import DatasetError, decoded_arrays, staging_folder, write_prepared
from synthratio.data.sources import bad_file, combine_surveys, patient_links, survey_source, usable_scans
from synthratio.runtime import progress_bar

log = logging.getLogger(__name__)

WEDGE_MIN_PIXELS = 64  # smaller white blobs at a corner are speckle, not a wedge


@dataclass
class DecodedScan:
    """What a worker returns for one scan: its pixel hash, the square arrays, or why it is unusable."""

    pixel_sha256: str = ""
    width: int = 0
    height: int = 0
    wedge: bool = False
    resized: dict[int, np.ndarray] = field(default_factory=dict)
    problem: str = ""


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
    """Fill wedge pixels with the background level of the rest of the image."""
    filled = image.copy()
    filled[mask] = np.uint8(background_level(image[~mask]))
    return filled


def read_pixels(path: Path, frame: int = 0) -> np.ndarray:
    """One scan as uint8 (height, width) grey levels: an image file, or frame `frame` of a DICOM file;
    raises DatasetError saying what is wrong with it."""
    if is_dicom(path):
        try:
            return read_frame(path, frame)
        except DicomError as error:
            raise DatasetError(str(error).removeprefix(f"{path}: ")) from None
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGB", "RGBA"):
                rgb = np.asarray(image.convert("RGB"))
                if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                    raise DatasetError("colour image; expected grayscale OCT")
                return np.asarray(image.convert("L"), dtype=np.uint8)
            if image.mode != "L":
                raise DatasetError(f"image mode {image.mode!r}; expected 8-bit grayscale 'L'")
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DatasetError(f"unreadable or truncated image ({error})") from None


def decode_scan(
    path: Path,
    sizes: tuple[int, ...],
    mask: bool,
    *,
    frame: int = 0,
    geometry: str = "squeeze",
    max_upscale: float = 1.0,
) -> DecodedScan:
    """Decode, check, optionally mask wedges and bring one scan to each square size as prepare.geometry
    says; a scan whose smaller side is more than `max_upscale` times smaller than the largest size is
    unusable. Never raises for a bad file."""
    try:
        pixels = read_pixels(path, frame)
    except DatasetError as error:
        return DecodedScan(problem=str(error))
    result = DecodedScan()
    result.height, result.width = pixels.shape
    if min(pixels.shape) * max_upscale < max(sizes):
        result.problem = (
            f"image {result.width}x{result.height} is smaller than the target size {max(sizes)} "
            f"(more than prepare.max_upscale={max_upscale} times)"
        )
        return result
    result.pixel_sha256 = hashlib.sha256(pixels.tobytes()).hexdigest()
    wedge = detect_wedges(pixels)
    result.wedge = bool(wedge.any())
    if mask and result.wedge:
        pixels = mask_wedges(pixels, wedge)
    result.resized = {size: to_square(pixels, size, geometry) for size in sizes}
    return result


def _decode_job(job: tuple[Path, tuple[int, ...], bool, int, str, float]) -> DecodedScan:
    path, sizes, mask, frame, geometry, max_upscale = job
    return decode_scan(path, sizes, mask, frame=frame, geometry=geometry, max_upscale=max_upscale)


def _union_patients(frame: pd.DataFrame, links: list[list] = ()) -> pd.Series:
    """Patient group per row: ids linked by a shared (pixel-identical) image, or named together in `links`,
    become one patient, named by the smallest id among them (ids are all numbers, or all strings)."""
    parent = {pid: pid for pid in frame["patient_id"].unique().tolist()}

    def find(pid):
        while parent[pid] != pid:
            parent[pid] = parent[parent[pid]]
            pid = parent[pid]
        return pid

    shared_images = [ids.tolist() for ids in frame.groupby("pixel_sha256")["patient_id"].unique()]
    for ids in [*shared_images, *links]:
        roots = sorted(find(pid) for pid in ids if pid in parent)
        for root in roots[1:]:
            parent[root] = roots[0]  # the smaller id stays the root, so it names the group
    return frame["patient_id"].map(find)


def assign_patient_splits(
    groups: pd.DataFrame, *, val_fraction: float, test_fraction: float, seed: int
) -> dict[int | str, str]:
    """Patient-disjoint split, stratified by each patient's set of classes so class shares hold in every split."""
    rng = np.random.default_rng(seed)
    signature = groups.groupby("patient_group")["class"].apply(lambda c: "+".join(sorted(set(c))))
    assignment: dict[int | str, str] = {}
    for _, patients in sorted(signature.groupby(signature)):
        ids = np.array(sorted(patients.index))
        rng.shuffle(ids)
        n_test = int(round(len(ids) * test_fraction))
        n_val = int(round(len(ids) * val_fraction))
        for i, pid in enumerate(ids.tolist()):
            assignment[pid] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return assignment


def prepare_dataset(
    raw: Path | Mapping[str, Path], out: Path, config: PrepareConfig, *, sizes: tuple[int, ...]
) -> dict:
    """Survey the source folder(s) (name -> folder; one folder is named after itself) and prepare_surveyed."""
    roots = {raw.name: raw} if isinstance(raw, Path) else dict(raw)
    surveys = combine_surveys({name: survey_source(root, config) for name, root in roots.items()})
    return prepare_surveyed(surveys, roots, out, config, sizes=sizes)


def prepare_surveyed(
    surveys: pd.DataFrame, roots: Mapping[str, Path], out: Path, config: PrepareConfig, *, sizes: tuple[int, ...]
) -> dict:
    """Decode, deduplicate, split and square every surveyed scan (sources.combine_surveys; `roots`: source
    name -> folder); write the prepared data set to `out` (prepared.write_prepared) and return the summary
    that becomes metrics/data.json."""
    sizes = tuple(sorted(set(sizes)))
    skipped = Counter(problem.split(" (")[0] for problem in surveys["problem"] if problem)
    scans = usable_scans(surveys, roots, config.classes)
    started = time.perf_counter()
    paths = [roots[source] / file for source, file in zip(scans["source"], scans["file"])]
    arrays = decoded_arrays(out, len(scans), sizes)
    try:
        decoded = _decode_all(paths, scans["frame"].tolist(), arrays, config)
        decode_seconds = time.perf_counter() - started
        frame = _index_rows(roots, scans, decoded, config, skipped)
        frame["patient_group"] = _union_patients(frame, patient_links(scans))
        keep, stats = _deduplicate(frame)
        keep, leaks = _assign_splits(frame, keep, config)
        frame = frame[keep].reset_index(drop=True)
        summary = _summary(frame, stats, leaks, skipped, decode_seconds, len(surveys), sizes, config)
        write_prepared(out, frame, arrays)
    except BaseException:
        shutil.rmtree(staging_folder(out), ignore_errors=True)  # gigabytes of decoded scans at full size
        raise
    return summary


def _decode_all(
    paths: list[Path], frames: list[int], arrays: dict[int, np.ndarray], config: PrepareConfig
) -> list[DecodedScan]:
    """decode_scan of every scan, in prepare.workers processes (0: one per core); scan i's square images go
    to row i of `arrays` (keyed by size) as they arrive, and what is returned holds none."""
    workers = config.workers or os.cpu_count() or 1
    sizes = tuple(arrays)
    jobs = [
        (path, sizes, config.mask_wedges, frame, config.geometry, config.max_upscale)
        for path, frame in zip(paths, frames)
    ]
    results = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        decoding = pool.map(_decode_job, jobs, chunksize=16)
        for row, result in enumerate(progress_bar(decoding, total=len(jobs), desc="prepare: decode", unit="scan")):
            for size, image in result.resized.items():
                arrays[size][row] = image
            result.resized = {}
            results.append(result)
    return results


def _index_rows(
    roots: Mapping[str, Path],
    scans: pd.DataFrame,
    decoded: list[DecodedScan],
    config: PrepareConfig,
    skipped: Counter,
) -> pd.DataFrame:
    """An index row per usable scan, with `decoded_row`, its row in the decoded arrays; an unusable scan is
    skipped (counted in `skipped`) or raises, as prepare.on_bad_file says."""
    rows = []
    for decoded_row, (scan, result) in enumerate(zip(scans.to_dict("records"), decoded)):
        if result.problem:
            where = f"{roots[scan['source']] / scan['file']}" + (f" frame {scan['frame']}" if scan["frame"] else "")
            skipped[bad_file(where, result.problem, config).split(" (")[0]] += 1
            continue
        rows.append(
            {
                "file": scan["file"],
                "source": scan["source"],
                "frame": scan["frame"],
                "sha256": scan["sha256"],
                "pixel_sha256": result.pixel_sha256,
                "class": scan["class"],
                "label": config.classes.index(scan["class"]),
                "patient_id": scan["patient_id"],
                "official_split": scan["official_split"],
                "width": result.width,
                "height": result.height,
                "wedge": result.wedge,
                "geometry": describe(result.width, result.height, config.geometry),
                "decoded_row": decoded_row,
            }
        )
    if not rows:
        where = ", ".join(str(root) for root in roots.values())
        raise DatasetError(f"{where}: no usable scans of classes {list(config.classes)}")
    return pd.DataFrame(rows)


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
    audit = shortcut_audit(frame, config.classes)
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
        "geometry": config.geometry,
        "scans_per_source": {source: int(n) for source, n in frame["source"].value_counts(sort=False).items()},
        "shortcuts": audit["headline"],
        "shortcut_detail": audit["detail"],
        "scans_per_second": round(listed / seconds, 1) if seconds > 0 else None,
    }
