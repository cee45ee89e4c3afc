from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthratio.config import PrepareConfig
from synthratio.data.ingest import DatasetError, detect_wedges, load_split, mask_wedges, prepare_dataset

CONFIG = PrepareConfig(
    classes=("CNV", "NORMAL"), split="patient", val_fraction=0.25, test_fraction=0.25, seed=0,
    mask_wedges=True, on_bad_file="error", workers=1,
)


def scan(seed: int, width: int = 48, height: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 200, size=(height, width), dtype=np.uint8)


def save(raw: Path, relative: str, pixels: np.ndarray) -> Path:
    path = raw / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG" if path.suffix == ".png" else "JPEG", quality=95)
    return path


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """Eight patients per class, two scans each, in the Kaggle layout; no traps."""
    root = tmp_path / "raw"
    for cls, offset in (("CNV", 1000), ("NORMAL", 2000)):
        for patient in range(8):
            split = "test" if patient < 2 else "train"
            for number in (1, 2):
                save(root, f"{split}/{cls}/{cls}-{offset + patient}-{number}.jpeg", scan(offset + 10 * patient + number))
    return root


def test_patient_split_is_disjoint_and_arrays_match_index(raw: Path, tmp_path: Path):
    out = tmp_path / "prepared"
    summary = prepare_dataset(raw, out, CONFIG, sizes=(16, 8), progress=False)
    index = pd.read_csv(out / "index.csv")
    assert summary["scans"] == 32 and summary["patients"] == 16
    assert summary["patients_in_several_splits"] == 0
    assert index.groupby("patient_group")["split"].nunique().max() == 1
    for split in ("train", "val", "test"):
        for size in (8, 16):
            images, labels = load_split(out, split, size)
            assert images.shape[1:] == (size, size) and images.dtype == np.uint8
            assert len(labels) == (index["split"] == split).sum()
    assert not (tmp_path / "prepared.partial").exists()


def test_rows_follow_the_index(raw: Path, tmp_path: Path):
    """Row i of an array is the scan index.csv lists at row i of that split."""
    out = tmp_path / "prepared"
    prepare_dataset(raw, out, CONFIG, sizes=(16,), progress=False)
    index = pd.read_csv(out / "index.csv")
    images, _ = load_split(out, "train", 16)
    first = index[(index["split"] == "train") & (index["row"] == 0)].iloc[0]
    expected = np.asarray(Image.open(raw / first["file"]).resize((16, 16), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(images[0], expected)


def test_duplicates_linked_patients_and_conflicts(raw: Path, tmp_path: Path):
    # the same image under a second name and patient id: one patient, one copy kept
    pixels = np.asarray(Image.open(raw / "train/CNV/CNV-1003-1.jpeg"))
    save(raw, "train/CNV/CNV-5555-1.png", pixels)
    # the same image filed under both classes: every copy dropped
    conflict = scan(77)
    save(raw, "train/CNV/CNV-6666-1.png", conflict)
    save(raw, "train/NORMAL/NORMAL-6667-1.png", conflict)
    summary = prepare_dataset(raw, tmp_path / "prepared", CONFIG, sizes=(16,), progress=False)
    index = pd.read_csv(tmp_path / "prepared" / "index.csv")
    assert summary["duplicates_dropped"] == 1
    assert summary["conflicting_labels_dropped"] == 2
    assert summary["patients"] == 16  # 5555 merged into 1003; 6666/6667 only had the conflicting image
    assert set(index.loc[index["patient_id"] == 1003, "patient_group"]) == {1003}


def test_official_split_removes_leaks_and_widens_val(raw: Path, tmp_path: Path):
    save(raw, "train/NORMAL/NORMAL-1000-3.jpeg", scan(999))  # patient 1000 is in test (as CNV)
    save(raw, "val/CNV/CNV-1005-3.jpeg", scan(998))  # patient 1005 is in train
    summary = prepare_dataset(raw, tmp_path / "prepared", replace(CONFIG, split="official"), sizes=(16,), progress=False)
    assert summary["leaks_removed"] == 3  # the train scan of a test patient, two train scans of a val patient
    assert summary["patients_in_several_splits"] == 0
    index = pd.read_csv(tmp_path / "prepared" / "index.csv")
    assert set(index.loc[index["official_split"] == "test", "split"]) == {"test"}
    assert summary["patients_per_split"]["val"] > 1  # the official val patient plus train patients moved there


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("train/CNV/notes.txt", lambda p: p.write_text("hello"), "not an image file"),
        ("train/CNV/scan-1.jpeg", lambda p: Image.fromarray(scan(1)).save(p), "no patient id"),
        ("train/CNV/CNV-42-1.jpeg", lambda p: p.write_bytes(b"\xff\xd8\xff\xe0garbage"), "unreadable or truncated"),
        ("train/CNV/CNV-43-1.png", lambda p: Image.fromarray(np.dstack([scan(1), scan(2), scan(3)])).save(p), "colour image"),
        ("train/CNV/CNV-44-1.png", lambda p: Image.fromarray(scan(1).astype(np.uint16) * 200).save(p), "image mode"),
        ("train/CNV/CNV-45-1.jpeg", lambda p: Image.fromarray(scan(1, 8, 8)).save(p), "smaller than the target size"),
    ],
)
def test_bad_files_error_naming_the_file_or_are_counted(raw: Path, tmp_path: Path, name, make, message):
    path = raw / name
    make(path)
    out = tmp_path / "prepared"
    with pytest.raises(DatasetError, match=message) as error:
        prepare_dataset(raw, out, CONFIG, sizes=(16,), progress=False)
    assert str(path) in str(error.value)
    assert not out.exists() and not (tmp_path / "prepared.partial").exists()
    summary = prepare_dataset(raw, out, replace(CONFIG, on_bad_file="skip"), sizes=(16,), progress=False)
    assert sum(summary["skipped"].values()) == 1 and summary["scans"] == 32


def test_missing_class_folder_and_layout(raw: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match="DME"):
        prepare_dataset(raw, tmp_path / "p", replace(CONFIG, classes=("CNV", "DME")), sizes=(16,), progress=False)
    (raw / "test").rename(tmp_path / "elsewhere")  # train/ alone: neither layout
    with pytest.raises(DatasetError, match="expected train/ and test/"):
        prepare_dataset(raw, tmp_path / "p", CONFIG, sizes=(16,), progress=False)
    assert not (tmp_path / "p").exists()


def test_flat_class_folders_are_one_pool_split_by_patient(raw: Path, tmp_path: Path):
    """{CLASS}/*.jpeg without split folders: every scan, re-split by patient; `official` cannot apply."""
    flat = raw / "train"
    for path in (raw / "test").rglob("*.jpeg"):
        path.rename(flat / path.parent.name / path.name)
    summary = prepare_dataset(flat, tmp_path / "prepared", CONFIG, sizes=(16,), progress=False)
    assert summary["scans"] == 32 and summary["patients"] == 16 and summary["patients_in_several_splits"] == 0
    with pytest.raises(DatasetError, match=r"prepare.split='official' keeps Kermany's official folders"):
        prepare_dataset(flat, tmp_path / "other", replace(CONFIG, split="official"), sizes=(16,), progress=False)
    assert not (tmp_path / "other").exists()


def test_wedges_are_detected_and_masked():
    image = np.full((40, 60), 30, np.uint8)
    image[20:30, 10:50] = 120  # retina, not touching a corner
    for row in range(12):  # a white triangle in the top-left corner
        image[row, : 12 - row] = 255
    image[35, 30] = 255  # a lone bright speckle away from the corners
    mask = detect_wedges(image)
    assert mask.sum() == sum(12 - row for row in range(12))
    filled = mask_wedges(image, mask)
    assert filled[0, 0] == 30 and filled[35, 30] == 255
    assert not detect_wedges(np.full((40, 60), 30, np.uint8)).any()


def test_kermany_sample(kermany_sample: Path, tmp_path: Path):
    """The shared real sample, read in its flat {CLASS}/*.jpeg layout: 500 CNV/NORMAL scans of 492 patients
    (8 ids occur under both classes)."""
    summary = prepare_dataset(kermany_sample, tmp_path / "prepared", replace(CONFIG, workers=2), sizes=(32,), progress=False)
    assert summary["scans"] == 500
    assert summary["patients"] == 492
    assert summary["patients_in_several_splits"] == 0 and summary["leaks_removed"] == 0
    index = pd.read_csv(tmp_path / "prepared" / "index.csv")
    assert index["file"].str.match(r"^(CNV|NORMAL)/").all()
    wedge_share = index.groupby("class")["wedge"].mean()
    assert abs(wedge_share["CNV"] - wedge_share["NORMAL"]) < 0.1  # wedges occur in both classes alike


def test_kermany_sample_four_classes(kermany_sample: Path, tmp_path: Path):
    classes = ("CNV", "DME", "DRUSEN", "NORMAL")
    config = replace(CONFIG, classes=classes, workers=2)
    summary = prepare_dataset(kermany_sample, tmp_path / "prepared", config, sizes=(16,), progress=False)
    assert summary["scans"] + summary["duplicates_dropped"] + summary["conflicting_labels_dropped"] == 575
    assert summary["patients_in_several_splits"] == 0
    assert all(summary["counts"][split][cls] > 0 for split in ("train", "val", "test") for cls in classes)
