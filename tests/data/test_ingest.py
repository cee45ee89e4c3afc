import hashlib
import io
import os
import re
import sys
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthratio import runtime
from synthratio.config import PrepareConfig
from synthratio.data import ingest
from synthratio.data.ingest import (
    DatasetError,
    _summary,
    assign_patient_splits,
    decode_scan,
    detect_wedges,
    mask_wedges,
    prepare_dataset,
)  # fmt: skip
from synthratio.data.prepared import load_prepared
from synthratio.data.sources import survey_source

CONFIG = PrepareConfig(
    classes=("CNV", "NORMAL"),
    split="patient",
    val_fraction=0.25,
    test_fraction=0.25,
    seed=0,
    mask_wedges=True,
    on_bad_file="error",
    workers=1,
    file_pattern=r"(?P<label>[A-Z]+)-(?P<patient>\d+)-\d+",
    geometry="squeeze",
    max_upscale=1.0,
)


def scan(seed: int, width: int = 48, height: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 200, size=(height, width), dtype=np.uint8)


def save(raw: Path, relative: str, pixels: np.ndarray) -> Path:
    path = raw / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG" if path.suffix == ".png" else "JPEG", quality=95)
    return path


def pixel_hash(path: Path) -> str:
    """sha256 of a file's decoded grey levels, computed here rather than by ingest."""
    with Image.open(path) as image:
        return hashlib.sha256(np.asarray(image.convert("L")).tobytes()).hexdigest()


def assert_no_patient_in_two_splits(index: pd.DataFrame, raw: Path, linked: dict[int, int] | None = None) -> None:
    """Leakage checked on what the split was not made from (never `patient_group`): the raw `patient_id`
    column, the id in each file's name, ids that are one patient by construction (`linked`: id -> the id it
    belongs with) and the raw files' pixels."""
    named = index["file"].map(lambda f: int(Path(f).stem.split("-")[1]))
    person = named.map(lambda pid: (linked or {}).get(pid, pid))
    pixels = index["file"].map(lambda f: pixel_hash(raw / f))
    for key, values in (
        ("patient_id", index["patient_id"]),
        ("file name", named),
        ("person", person),
        ("pixels", pixels),
    ):
        splits = index.groupby(values.to_numpy())["split"].unique()
        assert (splits.map(len) == 1).all(), f"{key} in several splits: {splits[splits.map(len) > 1].to_dict()}"


def assert_arrays_disjoint(prepared: Path, size: int) -> None:
    """No prepared image (byte for byte) in two splits."""
    rows = {
        split: {image.tobytes() for image in load_prepared(prepared, split, size).images}
        for split in ("train", "val", "test")
    }
    assert not (rows["train"] & rows["val"] or rows["train"] & rows["test"] or rows["val"] & rows["test"])


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """Eight patients per class, two scans each, in the Kaggle layout; no traps."""
    root = tmp_path / "raw"
    for cls, offset in (("CNV", 1000), ("NORMAL", 2000)):
        for patient in range(8):
            split = "test" if patient < 2 else "train"
            for number in (1, 2):
                save(
                    root, f"{split}/{cls}/{cls}-{offset + patient}-{number}.jpeg", scan(offset + 10 * patient + number)
                )
    return root


def test_patient_split_is_disjoint_and_arrays_match_index(raw: Path, tmp_path: Path):
    out = tmp_path / "prepared"
    summary = prepare_dataset(raw, out, CONFIG, sizes=(16, 8))
    index = pd.read_csv(out / "index.csv")
    assert summary["scans"] == 32 and summary["patients"] == 16
    assert summary["patients_in_several_splits"] == 0
    assert_no_patient_in_two_splits(index, raw)
    assert_arrays_disjoint(out, 16)
    for split in ("train", "val", "test"):
        for size in (8, 16):
            loaded = load_prepared(out, split, size)
            assert loaded.images.shape[1:] == (size, size) and loaded.images.dtype == np.uint8
            assert len(loaded.labels) == (index["split"] == split).sum()
    assert not (tmp_path / "prepared.partial").exists()


def test_index_is_read_once_for_every_split_and_again_once_rewritten(raw: Path, tmp_path: Path, monkeypatch):
    out = tmp_path / "prepared"
    prepare_dataset(raw, out, CONFIG, sizes=(16,))
    reads = []
    read_csv = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda path: reads.append(path) or read_csv(path))
    for split in ("train", "val", "test"):
        load_prepared(out, split, 16)
    assert reads == [(out / "index.csv").resolve()]
    prepare_dataset(raw, out, replace(CONFIG, seed=1), sizes=(16,))  # another split of the patients
    again = load_prepared(out, "train", 16)
    assert len(reads) == 2
    expected = pd.read_csv(out / "index.csv").query("split == 'train'").sort_values("row")
    np.testing.assert_array_equal(again.files, expected["file"].to_numpy())


@pytest.mark.parametrize("change", ["size", "mtime", "inode"])
def test_an_index_changed_in_any_way_is_read_again(raw: Path, tmp_path: Path, monkeypatch, change: str):
    """The cache key is the index's size, mtime and inode: each alone marks a new index."""
    out = tmp_path / "prepared"
    prepare_dataset(raw, out, CONFIG, sizes=(16,))
    reads = []
    read_csv = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda path: reads.append(path) or read_csv(path))
    load_prepared(out, "train", 16)
    index, before = out / "index.csv", (out / "index.csv").stat()
    text = index.read_text()
    if change == "inode":  # a new file of the same size and mtime
        (out / "new.csv").write_text(text)
        os.replace(out / "new.csv", index)
    else:  # the same file, rewritten in place: longer with its mtime kept, or as long with a later mtime
        index.write_text(text + "\n" if change == "size" else text)
    later = before.st_mtime_ns + (10**9 if change == "mtime" else 0)
    os.utime(index, ns=(before.st_atime_ns, later))
    after = index.stat()
    changed = {"size": after.st_size, "mtime": after.st_mtime_ns, "inode": after.st_ino}
    unchanged = {"size": before.st_size, "mtime": before.st_mtime_ns, "inode": before.st_ino}
    assert [key for key in changed if changed[key] != unchanged[key]] == [change]
    load_prepared(out, "train", 16)
    assert len(reads) == 2


def test_rows_follow_the_index(raw: Path, tmp_path: Path):
    """Row i of an array is the scan index.csv lists at row i of that split."""
    out = tmp_path / "prepared"
    prepare_dataset(raw, out, CONFIG, sizes=(16,))
    index = pd.read_csv(out / "index.csv")
    images = load_prepared(out, "train", 16).images
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
    summary = prepare_dataset(raw, tmp_path / "prepared", CONFIG, sizes=(16,))
    index = pd.read_csv(tmp_path / "prepared" / "index.csv")
    assert summary["duplicates_dropped"] == 1
    assert summary["conflicting_labels_dropped"] == 2
    assert summary["patients"] == 16  # 5555 merged into 1003; 6666/6667 only had the conflicting image
    assert set(index.loc[index["patient_id"] == 1003, "patient_group"]) == {1003}
    assert summary["same_name_different_image"] == 0


def test_a_linked_id_with_scans_of_its_own_is_the_same_patient(raw: Path, tmp_path: Path):
    """Ids 6000-6007 each share one pixel-identical scan with CNV patient 1000-1007 and bring two scans of
    their own: eight patients, not sixteen, each wholly in one split. Unmerged, every twin would be split on
    its own, and most pairs would straddle two splits."""
    linked = {}
    for patient in range(8):
        source, twin = 1000 + patient, 6000 + patient
        folder = "test" if patient < 2 else "train"
        save(raw, f"train/CNV/CNV-{twin}-1.png", np.asarray(Image.open(raw / f"{folder}/CNV/CNV-{source}-1.jpeg")))
        for number in (2, 3):
            save(raw, f"train/CNV/CNV-{twin}-{number}.jpeg", scan(10 * twin + number))
        linked[twin] = source
    out = tmp_path / "prepared"
    summary = prepare_dataset(raw, out, CONFIG, sizes=(16,))
    index = pd.read_csv(out / "index.csv")
    assert (summary["scans"], summary["duplicates_dropped"]) == (32 + 16, 8)
    assert (summary["patients"], summary["patient_ids"]) == (16, 24)
    assert summary["patients_per_split"] == {"train": 8, "val": 4, "test": 4}
    assert_no_patient_in_two_splits(index, raw, linked)
    assert_arrays_disjoint(out, 16)


def test_a_chain_of_links_is_one_patient_named_by_its_smallest_id(raw: Path, tmp_path: Path):
    """7003 shares a scan with 1003 and another with 7001, 7001 one with 7002 (a NORMAL eye too).

    Four ids, one patient 1003.
    """
    a, b, c = scan(501), scan(502), scan(503)
    save(raw, "train/CNV/CNV-7003-1.png", np.asarray(Image.open(raw / "train/CNV/CNV-1003-1.jpeg")))
    save(raw, "train/CNV/CNV-7003-2.png", a)
    save(raw, "train/CNV/CNV-7001-1.png", a)
    save(raw, "train/CNV/CNV-7001-2.png", b)
    save(raw, "train/NORMAL/NORMAL-7002-1.png", c)
    save(raw, "train/CNV/CNV-7002-2.png", b)
    save(raw, "train/CNV/CNV-7003-3.png", scan(504))  # its only scan that is not a copy
    summary = prepare_dataset(raw, tmp_path / "prepared", CONFIG, sizes=(16,))
    index = pd.read_csv(tmp_path / "prepared" / "index.csv")
    groups = index.groupby("patient_id")["patient_group"].unique().map(list).to_dict()
    assert {pid: groups[pid] for pid in (1003, 7001, 7002, 7003)} == {
        1003: [1003],
        7001: [1003],
        7002: [1003],
        7003: [1003],
    }
    assert summary["patients"] == 16 and summary["duplicates_dropped"] == 3
    assert_no_patient_in_two_splits(index, raw, {7001: 1003, 7002: 1003, 7003: 1003})


def test_one_image_under_three_ids_makes_them_one_patient(raw: Path, tmp_path: Path):
    pixels = np.asarray(Image.open(raw / "train/NORMAL/NORMAL-2005-2.jpeg"))
    save(raw, "train/NORMAL/NORMAL-8001-1.png", pixels)
    save(raw, "train/NORMAL/NORMAL-8002-1.png", pixels)
    save(raw, "train/NORMAL/NORMAL-8001-2.png", scan(8001))  # each id keeps a scan of its own
    save(raw, "train/NORMAL/NORMAL-8002-2.png", scan(8002))
    summary = prepare_dataset(raw, tmp_path / "prepared", CONFIG, sizes=(16,))
    index = pd.read_csv(tmp_path / "prepared" / "index.csv")
    assert index.groupby("patient_id")["patient_group"].unique().map(list)[[2005, 8001, 8002]].tolist() == [[2005]] * 3
    assert (summary["patients"], summary["duplicates_dropped"], summary["scans"]) == (16, 2, 34)


def test_summary_counts_every_scan_and_patient(raw: Path, tmp_path: Path):
    """Eight patients of two scans per class, a quarter of each class's patients in val and in test."""
    summary = prepare_dataset(raw, tmp_path / "prepared", CONFIG, sizes=(16, 8, 16))
    assert summary.pop("scans_per_second") > 1  # 32 tiny scans take well under 32 s
    assert summary.pop("shortcut_detail")["cues"] == ["width"]  # one source: width is the only acquisition cue
    same_width = {"width_cramers_v": 0.0, "shortcut_auroc": 0.5}  # every scan 48 px wide: nothing to learn from it
    assert summary.pop("shortcuts") == {"train": same_width, "val": same_width, "test": same_width, "warnings": []}
    assert summary == {
        "scans": 32, "patients": 16, "patient_ids": 16,
        "counts": {"train": {"CNV": 8, "NORMAL": 8}, "val": {"CNV": 4, "NORMAL": 4}, "test": {"CNV": 4, "NORMAL": 4}},
        "patients_per_split": {"train": 8, "val": 4, "test": 4}, "patients_in_several_splits": 0,
        "duplicates_dropped": 0, "conflicting_labels_dropped": 0, "same_name_different_image": 0, "leaks_removed": 0,
        "skipped": {}, "scans_with_wedges": 0, "wedges_masked": True, "sizes": [8, 16], "geometry": "squeeze",
        "scans_per_source": {"raw": 32},
    }  # fmt: skip
    index = pd.read_csv(tmp_path / "prepared" / "index.csv")
    by_split = {split: sorted(group["patient_id"].unique().tolist()) for split, group in index.groupby("split")}
    assert by_split == {  # one seeded check: prepare.seed 0 always deals these patients
        "test": [1002, 1004, 2002, 2006],
        "val": [1003, 1006, 2004, 2007],
        "train": [1000, 1001, 1005, 1007, 2000, 2001, 2003, 2005],
    }


def test_summary_flags_every_patient_found_in_more_than_one_split():
    """The leak check of metrics/data.json, fed a frame that leaks (prepare never makes one): patient 1 in
    train and test, patient 2 in all three splits, patient 3 only in val; and 7 scans listed in 3 s."""
    frame = pd.DataFrame({
        "patient_group": [1, 1, 2, 2, 2, 3], "patient_id": [1, 1, 2, 2, 2, 3], "class": ["CNV"] * 3 + ["NORMAL"] * 3,
        "split": ["train", "test", "train", "val", "test", "val"], "wedge": [False, True, False, False, False, False],
        "width": [512] * 6, "source": ["raw"] * 6,
    })  # fmt: skip
    summary = _summary(frame, {}, 0, Counter(), 3.0, 7, (16,), CONFIG)
    assert summary["patients_in_several_splits"] == 2  # two splits are as much a leak as three
    assert summary["scans_per_second"] == 2.3  # 7 / 3, to a tenth
    assert summary["counts"]["train"] == {"CNV": 2, "NORMAL": 0} and summary["counts"]["val"] == {"CNV": 0, "NORMAL": 2}


def test_one_file_name_in_two_folders_with_different_pixels_is_counted(raw: Path, tmp_path: Path):
    save(raw, "test/CNV/CNV-1003-1.jpeg", scan(4242))  # the name of a train scan, another image
    summary = prepare_dataset(raw, tmp_path / "prepared", CONFIG, sizes=(16,))
    assert summary["same_name_different_image"] == 1 and summary["scans"] == 33 and summary["duplicates_dropped"] == 0


PATIENTS_BY_CLASSES = {"CNV": range(100, 112), "NORMAL": range(200, 212), "CNV+NORMAL": range(300, 304)}


def split_groups() -> pd.DataFrame:
    """Two rows (scans) per patient and class: 12 CNV-only patients, 12 NORMAL-only, 4 with both."""
    rows = [
        {"patient_group": pid, "class": cls}
        for classes, ids in PATIENTS_BY_CLASSES.items()
        for pid in ids
        for cls in classes.split("+")
        for _ in range(2)
    ]
    return pd.DataFrame(rows)  # fmt: skip


@pytest.mark.parametrize("seed", range(5))
def test_patient_split_is_stratified_by_each_patients_classes(seed: int):
    """A quarter of each kind of patient (CNV only, NORMAL only, both) in val and in test, whatever the seed;
    a split of the pooled 28 patients would put 7 in test with a class make-up that varies with the seed."""
    splits = assign_patient_splits(split_groups(), val_fraction=0.25, test_fraction=0.25, seed=seed)
    kind = {pid: classes for classes, ids in PATIENTS_BY_CLASSES.items() for pid in ids}
    assert sorted(splits) == sorted(kind)
    assert Counter((kind[pid], split) for pid, split in splits.items()) == {
        ("CNV", "test"): 3, ("CNV", "val"): 3, ("CNV", "train"): 6,
        ("NORMAL", "test"): 3, ("NORMAL", "val"): 3, ("NORMAL", "train"): 6,
        ("CNV+NORMAL", "test"): 1, ("CNV+NORMAL", "val"): 1, ("CNV+NORMAL", "train"): 2,
    }  # fmt: skip


def test_patient_split_is_shuffled_by_the_seed_and_repeatable():
    """Which patients go to test depends on the seed (not on the ids' order), every patient can land in any
    split, and the same seed gives the same split whatever the order of the rows."""
    groups = pd.DataFrame({"patient_group": np.repeat(np.arange(20), 2), "class": "CNV"})
    by_seed = [assign_patient_splits(groups, val_fraction=0.25, test_fraction=0.25, seed=seed) for seed in range(40)]
    shuffled = groups.sample(frac=1.0, random_state=1)
    assert assign_patient_splits(shuffled, val_fraction=0.25, test_fraction=0.25, seed=0) == by_seed[0]
    tests = [frozenset(pid for pid, split in splits.items() if split == "test") for splits in by_seed]
    assert all(len(t) == 5 for t in tests) and len(set(tests)) >= 38
    assert tests[0] != frozenset(range(5)) and tests[0] != frozenset(range(15, 20))
    for pid in range(20):
        assert {splits[pid] for splits in by_seed} == {"train", "val", "test"}, pid


@pytest.mark.parametrize(
    ("n", "val", "test", "expected"),
    [(10, 0.25, 0.25, (2, 2, 6)), (10, 0.15, 0.35, (2, 4, 4)), (3, 0.2, 0.2, (1, 1, 1)), (4, 0.0, 0.5, (0, 2, 2))],
)
def test_patient_split_sizes_round_each_share(n: int, val: float, test: float, expected: tuple[int, int, int]):
    """round(share x patients) per split (Python rounds halves to even: 2.5 -> 2, 3.5 -> 4), the rest in train."""
    groups = pd.DataFrame({"patient_group": np.arange(n), "class": "NORMAL"})
    counts = Counter(assign_patient_splits(groups, val_fraction=val, test_fraction=test, seed=0).values())
    assert (counts["val"], counts["test"], counts["train"]) == expected


def test_official_split_removes_leaks_and_widens_val(raw: Path, tmp_path: Path):
    save(raw, "train/NORMAL/NORMAL-1000-3.jpeg", scan(999))  # patient 1000 is in test (as CNV)
    save(raw, "val/CNV/CNV-1005-3.jpeg", scan(998))  # patient 1005 is in train
    save(raw, "val/NORMAL/NORMAL-2001-3.jpeg", scan(997))  # patient 2001 is in test
    summary = prepare_dataset(raw, tmp_path / "prepared", replace(CONFIG, split="official"), sizes=(16,))
    assert (
        summary["leaks_removed"] == 4
    )  # the train scan and the val scan of test patients, two train scans of a val patient
    assert summary["patients_in_several_splits"] == 0
    index = pd.read_csv(tmp_path / "prepared" / "index.csv")
    assert_no_patient_in_two_splits(index, raw)
    assert set(index.loc[index["official_split"] == "test", "split"]) == {"test"}
    assert summary["patients_per_split"]["val"] > 1  # the official val patient plus train patients moved there


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("train/CNV/notes.txt", lambda p: p.write_text("hello"), "not an image file"),
        (
            "train/CNV/scan-1.jpeg",
            lambda p: Image.fromarray(scan(1)).save(p),
            "file name has no patient id; expected a name prepare.file_pattern",
        ),
        ("train/CNV/CNV-42-1.jpeg", lambda p: p.write_bytes(b"\xff\xd8\xff\xe0garbage"), "unreadable or truncated"),
        (
            "train/CNV/CNV-43-1.png",
            lambda p: Image.fromarray(np.dstack([scan(1), scan(2), scan(3)])).save(p),
            "colour image",
        ),
        ("train/CNV/CNV-44-1.png", lambda p: Image.fromarray(scan(1).astype(np.uint16) * 200).save(p), "image mode"),
        ("train/CNV/CNV-45-1.jpeg", lambda p: Image.fromarray(scan(1, 8, 8)).save(p), "smaller than the target size"),
    ],
)
def test_bad_files_error_naming_the_file_or_are_counted(raw: Path, tmp_path: Path, name, make, message):
    path = raw / name
    make(path)
    out = tmp_path / "prepared"
    with pytest.raises(DatasetError, match=message) as error:
        prepare_dataset(raw, out, CONFIG, sizes=(16,))
    assert str(path) in str(error.value)
    assert not out.exists() and not (tmp_path / "prepared.partial").exists()
    summary = prepare_dataset(raw, out, replace(CONFIG, on_bad_file="skip"), sizes=(16,))
    assert sum(summary["skipped"].values()) == 1 and summary["scans"] == 32


def test_skipped_files_are_counted_by_problem(raw: Path, tmp_path: Path):
    for name in ("notes.txt", "readme.md"):
        (raw / "train" / "CNV" / name).write_text("hello")
    (raw / "train" / "CNV" / ".DS_Store").write_text("hidden files are not scans")
    save(raw, "train/NORMAL/NORMAL-5-1.png", scan(5, 8, 8))
    save(raw, "train/NORMAL/scan-7.png", scan(7))
    summary = prepare_dataset(raw, tmp_path / "prepared", replace(CONFIG, on_bad_file="skip"), sizes=(16,))
    assert summary["skipped"] == {  # the keys of metrics/data.json say what was wrong, in full
        "not an image file": 2, "image 8x8 is smaller than the target size 16": 1,
        f"file name has no patient id; expected a name prepare.file_pattern {CONFIG.file_pattern!r} fits": 1,
    }  # fmt: skip
    assert summary["scans"] == 32


def test_a_folder_of_only_unusable_scans_errors_naming_it(tmp_path: Path):
    """Skipping every scan leaves nothing to prepare: one error naming the raw folder, no output."""
    raw = tmp_path / "raw"
    for cls in ("CNV", "NORMAL"):
        save(raw, f"train/{cls}/{cls}-1-1.jpeg", scan(1, 8, 8))  # smaller than the target size
        save(raw, f"test/{cls}/{cls}-2-1.jpeg", scan(2, 8, 8))
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(raw))}: no usable scans of classes \['CNV', 'NORMAL'\]"):
        prepare_dataset(raw, tmp_path / "prepared", replace(CONFIG, on_bad_file="skip"), sizes=(16,))
    assert not (tmp_path / "prepared").exists()


def test_missing_class_folder_and_layout(raw: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match=r"no scans of class 'DME' in any split; prepare.classes asks for it"):
        prepare_dataset(raw, tmp_path / "p", replace(CONFIG, classes=("CNV", "DME")), sizes=(16,))
    save(raw, "train/DME/DME-3000-1.jpeg", scan(3000))  # DME in train, not in test: a layout mistake
    with pytest.raises(DatasetError, match=r"test/DME: class folder missing; other splits of .* have 'DME'"):
        prepare_dataset(raw, tmp_path / "p", replace(CONFIG, classes=("CNV", "DME")), sizes=(16,))
    (raw / "test").rename(tmp_path / "elsewhere")  # train/ alone: neither layout
    layout = r"Kermany's \{train,val,test\}/\{CLASS\}/\*.jpeg, a flat \{CLASS\}/\*.jpeg or a manifest.csv"
    with pytest.raises(DatasetError, match=rf"found folders \['train'\]; expected train/ and test/ .*: {layout}"):
        prepare_dataset(raw, tmp_path / "p", CONFIG, sizes=(16,))
    assert not (tmp_path / "p").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"found folders \[\]; expected train/ and test/"):
        prepare_dataset(tmp_path / "empty", tmp_path / "p", CONFIG, sizes=(16,))
    with pytest.raises(DatasetError, match=rf"input folder not found; expected {layout}"):
        prepare_dataset(tmp_path / "absent", tmp_path / "p", CONFIG, sizes=(16,))


def test_a_class_folder_without_scans_and_a_scan_in_the_wrong_class_folder_are_named(raw: Path, tmp_path: Path):
    for path in (raw / "train" / "NORMAL").iterdir():
        path.unlink()
    for path in list((raw / "test" / "NORMAL").iterdir())[1:]:
        path.unlink()  # one NORMAL scan left: enough
    one = prepare_dataset(raw, tmp_path / "one", replace(CONFIG, val_fraction=0.0, test_fraction=0.0), sizes=(16,))
    assert one["scans"] == 17
    # the per-class counts of metrics/data.json: 16 CNV, the one NORMAL, all in train (no val or test asked for)
    assert one["counts"] == {
        "train": {"CNV": 16, "NORMAL": 1},
        "val": {"CNV": 0, "NORMAL": 0},
        "test": {"CNV": 0, "NORMAL": 0},
    }
    (raw / "test" / "NORMAL" / next((raw / "test" / "NORMAL").iterdir()).name).unlink()
    with pytest.raises(DatasetError, match=r"no scans of class 'NORMAL' in any split"):
        prepare_dataset(raw, tmp_path / "none", CONFIG, sizes=(16,))
    save(raw, "train/NORMAL/CNV-1000-9.jpeg", scan(9))
    with pytest.raises(
        DatasetError, match=r"CNV-1000-9.jpeg: file name says class 'CNV' but it lies in folder 'NORMAL'"
    ):
        prepare_dataset(raw, tmp_path / "wrong", CONFIG, sizes=(16,))


def test_mendeley_layout_without_val_keeps_every_test_scan(raw: Path, tmp_path: Path):
    """train/ and test/ only (Mendeley v3): val comes from train patients, test as published."""
    summary = prepare_dataset(raw, tmp_path / "prepared", replace(CONFIG, split="official"), sizes=(16,))
    assert summary["counts"]["test"] == {"CNV": 4, "NORMAL": 4} and summary["patients_per_split"] == {
        "train": 8,
        "val": 4,
        "test": 4,
    }
    index = pd.read_csv(tmp_path / "prepared" / "index.csv")
    # one seeded check: the train patients moved to val come from prepare.seed (0 always moves these), so a
    # rerun of the stage gives the same split
    assert sorted(index.loc[index["split"] == "val", "patient_id"].unique().tolist()) == [1004, 1005, 2006, 2007]
    flat = survey_source(raw / "train", CONFIG)
    assert (flat["official_split"] == "").all()  # flat: the default split is by patient


def test_a_val_folder_without_every_class_folder_is_read_past(raw: Path, tmp_path: Path):
    """val/ with a CNV folder only (val holds a handful of scans): the missing val/NORMAL is no error, and the
    NORMAL scans of test/, listed after val/, are all still there."""
    save(raw, "val/CNV/CNV-1005-3.jpeg", scan(998))
    summary = prepare_dataset(raw, tmp_path / "prepared", replace(CONFIG, split="official"), sizes=(16,))
    assert summary["counts"]["test"] == {"CNV": 4, "NORMAL": 4}


class InProcessPool:
    """Stands in for ProcessPoolExecutor: records the processes asked for and decodes in this process."""

    def __init__(self, max_workers=None, asked: list | None = None) -> None:
        (asked if asked is not None else []).append(max_workers)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def map(self, fn, jobs, chunksize=1):
        return map(fn, jobs)


def test_prepare_workers_sets_the_decoding_processes(raw: Path, tmp_path: Path, monkeypatch):
    """prepare.workers: N processes; 0 every core; every core unknown (os.cpu_count() is None): one."""
    asked = []
    monkeypatch.setattr(ingest, "ProcessPoolExecutor", lambda max_workers=None: InProcessPool(max_workers, asked))
    monkeypatch.setattr(ingest.os, "cpu_count", lambda: 3)
    prepare_dataset(raw, tmp_path / "two", replace(CONFIG, workers=2), sizes=(16,))
    prepare_dataset(raw, tmp_path / "all", replace(CONFIG, workers=0), sizes=(16,))
    monkeypatch.setattr(ingest.os, "cpu_count", lambda: None)
    prepare_dataset(raw, tmp_path / "unknown", replace(CONFIG, workers=0), sizes=(16,))
    assert asked == [2, 3, 1]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_decoding_shows_a_progress_bar_on_a_terminal_unless_turned_off(raw: Path, tmp_path: Path, monkeypatch):
    """On a terminal (stderr a tty), prepare shows one labelled bar counting the scans decoded (progress on
    by default); runtime.progress: false (runtime.set_progress(False)) shows none."""
    monkeypatch.setattr(ingest, "ProcessPoolExecutor", InProcessPool)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    shown, hidden = Terminal(), Terminal()
    monkeypatch.setattr(sys, "stderr", shown)
    prepare_dataset(raw, tmp_path / "shown", CONFIG, sizes=(16,))
    monkeypatch.setattr(sys, "stderr", hidden)
    runtime.set_progress(False)
    try:
        prepare_dataset(raw, tmp_path / "hidden", CONFIG, sizes=(16,))
    finally:
        runtime.set_progress(True)
    monkeypatch.undo()
    assert (
        "\rprepare: decode: 100%" in shown.getvalue()
        and "| 32/32 [" in shown.getvalue()
        and "scan/s]" in shown.getvalue()
    )
    assert "prepare: decode" not in hidden.getvalue()


def test_prepare_replaces_an_earlier_output_and_a_stale_staging_folder(raw: Path, tmp_path: Path):
    out = tmp_path / "data" / "prepared"  # parents made as needed
    (tmp_path / "data" / "prepared.partial").mkdir(parents=True)
    (tmp_path / "data" / "prepared.partial" / "stale.npy").write_text("from a killed run")
    prepare_dataset(raw, out, CONFIG, sizes=(16,))
    (out / "old.txt").write_text("from an earlier run")
    prepare_dataset(raw, out, CONFIG, sizes=(8,))
    assert sorted(p.name for p in out.iterdir()) == ["index.csv", "test_8px.npy", "train_8px.npy", "val_8px.npy"]
    fresh = tmp_path / "new" / "deeper" / "prepared"  # no parent folder yet (a first `dvc repro` elsewhere)
    prepare_dataset(raw, fresh, CONFIG, sizes=(8,))
    assert (fresh / "index.csv").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"]
    index = pd.read_csv(out / "index.csv")
    assert index.columns.tolist() == ["file", "source", "frame", "sha256", "class", "label", "patient_id",
                                      "official_split", "width", "height", "wedge", "geometry", "patient_group",
                                      "split", "row"]  # fmt: skip
    assert (index["sha256"] == index["file"].map(lambda f: hashlib.sha256((raw / f).read_bytes()).hexdigest())).all()


def test_flat_class_folders_are_one_pool_split_by_patient(raw: Path, tmp_path: Path):
    """{CLASS}/*.jpeg without split folders: every scan, re-split by patient; `official` cannot apply."""
    flat = raw / "train"
    for path in (raw / "test").rglob("*.jpeg"):
        path.rename(flat / path.parent.name / path.name)
    summary = prepare_dataset(flat, tmp_path / "prepared", CONFIG, sizes=(16,))
    assert summary["scans"] == 32 and summary["patients"] == 16 and summary["patients_in_several_splits"] == 0
    assert pd.read_csv(tmp_path / "prepared" / "index.csv")["official_split"].isna().all()  # no official split to keep
    with pytest.raises(DatasetError, match=r"prepare.split='official' keeps the official split, so it needs them"):
        prepare_dataset(flat, tmp_path / "other", replace(CONFIG, split="official"), sizes=(16,))
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


def test_decode_scan_hashes_the_raw_pixels_masks_the_wedge_and_resizes(tmp_path: Path):
    """In this process (prepare decodes in worker processes): a 60x40 scan with a 10x10 white corner wedge."""
    pixels = scan(5, width=60, height=40)
    pixels[:10, :10] = 255
    path = save(tmp_path, "CNV-1-1.png", pixels)
    result = decode_scan(path, (8, 16), mask=True)
    assert (result.problem, result.width, result.height, result.wedge) == ("", 60, 40, True)
    assert result.pixel_sha256 == hashlib.sha256(pixels.tobytes()).hexdigest()  # before masking: copies stay copies
    masked = mask_wedges(pixels, detect_wedges(pixels))
    assert masked[0, 0] < 200 and sorted(result.resized) == [8, 16]
    for size in (8, 16):
        np.testing.assert_array_equal(
            result.resized[size], np.asarray(Image.fromarray(masked).resize((size, size), Image.Resampling.LANCZOS))
        )
    kept = decode_scan(path, (16,), mask=False)
    assert kept.wedge and kept.pixel_sha256 == result.pixel_sha256
    np.testing.assert_array_equal(
        kept.resized[16], np.asarray(Image.fromarray(pixels).resize((16, 16), Image.Resampling.LANCZOS))
    )
    grey_rgb = save(tmp_path, "CNV-1-2.png", np.dstack([pixels] * 3))  # three equal channels: a grey scan saved as RGB
    assert decode_scan(grey_rgb, (16,), mask=True).pixel_sha256 == result.pixel_sha256


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\ngarbage"), "unreadable or truncated image"),
        (
            lambda p: Image.fromarray(np.dstack([scan(1), scan(2), scan(3)])).save(p),
            "colour image; expected grayscale OCT",
        ),
        (lambda p: Image.fromarray(np.dstack([scan(1), scan(1), scan(2), scan(3)])).save(p), "colour image"),  # RGBA
        # two equal channels are not grey: a tint in any one channel is colour
        (lambda p: Image.fromarray(np.dstack([scan(1), scan(1), scan(2)])).save(p), "colour image"),
        (lambda p: Image.fromarray(np.dstack([scan(1), scan(2), scan(1)])).save(p), "colour image"),
        (lambda p: Image.fromarray(np.dstack([scan(2), scan(1), scan(1)])).save(p), "colour image"),
        (
            lambda p: Image.fromarray(scan(1).astype(np.uint16) * 200).save(p),
            "image mode 'I;16'; expected 8-bit grayscale 'L'",
        ),
        (lambda p: Image.fromarray(scan(1, 15, 40)).save(p), "image 15x40 is smaller than the target size 16"),
        (lambda p: Image.fromarray(scan(1, 40, 15)).save(p), "image 40x15 is smaller than the target size 16"),
    ],
)
def test_decode_scan_names_what_is_wrong_with_a_file(tmp_path: Path, make, message: str):
    path = tmp_path / "CNV-1-1.png"
    make(path)
    result = decode_scan(path, (8, 16), mask=True)
    assert result.problem.startswith(message) and result.resized == {} and result.pixel_sha256 == ""


def test_a_scan_exactly_as_large_as_the_target_size_is_kept(tmp_path: Path):
    """16 px on its short side for a 16 px target: no upsampling needed, so it is a usable scan."""
    path = save(tmp_path, "CNV-1-1.png", scan(1, 16, 40))
    result = decode_scan(path, (8, 16), mask=True)
    assert result.problem == "" and (result.width, result.height) == (16, 40) and sorted(result.resized) == [8, 16]


def corner_block(corner: str, offset: tuple[int, int] = (0, 0), level: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """A dark 40x60 image with an 8x8 block at `level` in `corner` (moved `offset` rows and columns inwards),
    and the block's mask."""
    image = np.full((40, 60), 30, np.uint8)
    top, left = corner.startswith("top"), corner.endswith("left")
    row = offset[0] if top else 40 - 8 - offset[0]
    col = offset[1] if left else 60 - 8 - offset[1]
    image[row : row + 8, col : col + 8] = level
    return image, image == level


@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_a_wedge_is_white_touching_a_corner_and_at_least_64_pixels(corner: str):
    image, block = corner_block(corner)  # 64 pixels at level 250: the least that counts
    np.testing.assert_array_equal(detect_wedges(image), block)
    for offset in ((1, 0), (0, 1)):  # one pixel away from the corner: a bright blob, not a wedge
        moved, _ = corner_block(corner, offset)
        assert not detect_wedges(moved).any()
    assert not detect_wedges(corner_block(corner, level=249)[0]).any()  # not white
    image[np.argwhere(block)[27][0], np.argwhere(block)[27][1]] = 30  # 63 pixels
    none = detect_wedges(image)
    assert none.shape == image.shape and none.dtype == bool and not none.any()
    dark = detect_wedges(np.full((40, 60), 30, np.uint8))
    assert dark.shape == (40, 60) and dark.dtype == bool and not dark.any()


def test_an_all_white_image_is_filled_with_black():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no background to take a median of: black, not NaN cast to uint8
        filled = mask_wedges(np.full((4, 4), 255, np.uint8), np.ones((4, 4), bool))
    np.testing.assert_array_equal(filled, np.zeros((4, 4), np.uint8))


def test_load_prepared_maps_the_array_and_names_the_arrays_there_when_one_is_missing(raw: Path, tmp_path: Path):
    out = tmp_path / "prepared"
    prepare_dataset(raw, out, CONFIG, sizes=(16,))
    test = load_prepared(out, "test", 16)
    assert isinstance(test.images, np.memmap) and test.labels.dtype == np.int64 and test.labels.flags.writeable
    rows = pd.read_csv(out / "index.csv").query("split == 'test'").sort_values("row")  # index.csv row i: array row i
    assert test.files.tolist() == rows["file"].tolist() and test.patients.tolist() == rows["patient_group"].tolist()
    assert test.labels.tolist() == rows["label"].tolist()
    found = r"found \['test_16px.npy', 'train_16px.npy', 'val_16px.npy'\] \(rerun prepare\)"
    with pytest.raises(
        FileNotFoundError, match=rf"train_32px.npy: no prepared array for split 'train' at 32px; {found}"
    ):
        load_prepared(out, "train", 32)
    with pytest.raises(FileNotFoundError, match=r"found \[\] \(rerun prepare\)"):
        load_prepared(tmp_path / "absent", "train", 16)
    index = pd.read_csv(out / "index.csv")
    index.drop(index.index[index["split"] == "test"][:1]).to_csv(out / "index.csv", index=False)
    with pytest.raises(DatasetError, match=r"test_16px.npy: 8 images but index.csv lists 7 for split 'test'"):
        load_prepared(out, "test", 16)


def test_kermany_sample(kermany_sample: Path, tmp_path: Path):
    """The shared real sample, read in its flat {CLASS}/*.jpeg layout: 500 CNV/NORMAL scans of 492 patients
    (8 ids occur under both classes)."""
    summary = prepare_dataset(kermany_sample, tmp_path / "prepared", replace(CONFIG, workers=2), sizes=(32,))
    assert summary["scans"] == 500
    assert summary["patients"] == 492
    assert summary["patients_in_several_splits"] == 0 and summary["leaks_removed"] == 0
    index = pd.read_csv(tmp_path / "prepared" / "index.csv")
    assert index["file"].str.match(r"^(CNV|NORMAL)/").all()
    assert_no_patient_in_two_splits(index, kermany_sample)
    assert summary["patients_per_split"] == {
        "train": 248,
        "val": 122,
        "test": 122,
    }  # round(60.5) = 60 of the 242 CNV-only and NORMAL-only patients each, 2 of 8 with both
    wedge_share = index.groupby("class")["wedge"].mean()
    assert abs(wedge_share["CNV"] - wedge_share["NORMAL"]) < 0.1  # wedges occur in both classes alike


def test_kermany_sample_four_classes(kermany_sample: Path, tmp_path: Path):
    classes = ("CNV", "DME", "DRUSEN", "NORMAL")
    config = replace(CONFIG, classes=classes, workers=2)
    summary = prepare_dataset(kermany_sample, tmp_path / "prepared", config, sizes=(16,))
    assert summary["scans"] + summary["duplicates_dropped"] + summary["conflicting_labels_dropped"] == 575
    assert summary["patients_in_several_splits"] == 0
    assert all(summary["counts"][split][cls] > 0 for split in ("train", "val", "test") for cls in classes)
