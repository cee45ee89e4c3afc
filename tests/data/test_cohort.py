import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synthratio.config import load_params
from synthratio.data.cohort import cohort_of, cohort_patients, cohort_rows, load_cohort
from synthratio.data.prepared import ScanRows, array_path, load_prepared

GROUPS = np.array(["a", "a", "b", "c", "d", "e", "f", "g", "h", "h", "i", "j"])
LABELS = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1])  # class 0 (CNV): patients a-h; class 1: i, j


def test_a_cohort_keeps_whole_patients_of_one_class_and_every_other_row():
    rows = cohort_rows(GROUPS, LABELS, label=0, keep=50, subset_seed=3)
    kept = set(GROUPS[rows][LABELS[rows] == 0])
    assert len(kept) == 4  # 50% of 8 patients
    assert all(set(np.flatnonzero(GROUPS == g)) <= set(rows) for g in kept)  # whole patients
    assert {10, 11} <= set(rows)  # the other class untouched


def test_a_held_back_patient_leaves_with_its_scans_of_every_class():
    """Kermany ids can carry scans of several classes (one eye's CNV and DRUSEN B-scans): a CNV patient held
    back from the cohort must not reach its classifiers or generator through a scan of another class, while
    the other class's own patients all stay."""
    groups = np.append(GROUPS, ["a", "b", "k"])  # a and b also have a class-1 scan; k is class 1 only
    labels = np.append(LABELS, [1, 1, 1])
    chosen = set(cohort_patients(groups, labels, label=0, keep=50, subset_seed=3).tolist())
    assert chosen == {"b", "c", "g", "h"}  # a is held back, b kept (subset seed 3)
    rows = set(cohort_rows(groups, labels, label=0, keep=50, subset_seed=3).tolist())
    assert 12 not in rows and 13 in rows  # a's class-1 scan leaves with a; b's stays with b
    assert set(groups[sorted(rows)]) == chosen | {"i", "j", "k"}


def test_cohorts_are_nested_and_drawn_by_the_subset_seed():
    cohorts = {
        keep: set(cohort_patients(GROUPS, LABELS, label=0, keep=keep, subset_seed=3)) for keep in (100, 75, 50, 25)
    }
    assert cohorts[25] <= cohorts[50] <= cohorts[75] <= cohorts[100] == set("abcdefgh")
    assert [len(cohorts[k]) for k in (25, 50, 75)] == [2, 4, 6]
    draws = {tuple(cohort_patients(GROUPS, LABELS, label=0, keep=50, subset_seed=s)) for s in range(8)}
    assert len(draws) > 1 and tuple(cohort_patients(GROUPS, LABELS, label=0, keep=50, subset_seed=3)) in draws


def test_a_tiny_cohort_keeps_one_patient_and_bad_keeps_are_refused():
    assert len(cohort_patients(GROUPS, LABELS, label=0, keep=1, subset_seed=0)) == 1
    with pytest.raises(ValueError, match="keep=0; expected a percent of patients in 1..100"):
        cohort_rows(GROUPS, LABELS, label=0, keep=0, subset_seed=0)


@pytest.mark.parametrize(
    ("keep", "n", "size"),
    [(4, 10, 1), (5, 10, 1), (14, 10, 1), (15, 10, 2), (25, 10, 3), (34, 10, 3), (35, 10, 4), (95, 10, 10),
     (100, 10, 10), (83, 3, 2)],
)  # fmt: skip
def test_cohort_size_rounds_half_up_and_keeps_at_least_one(keep: int, n: int, size: int):
    """round(keep % x n patients), halves up (1.5 -> 2, 9.5 -> 10; 2.49 -> 2), never fewer than one."""
    groups = np.arange(2 * n) // 2
    assert len(cohort_patients(groups, np.zeros(2 * n, int), label=0, keep=keep, subset_seed=0)) == size


def test_a_class_without_patients_and_keep_above_100_are_refused_one_patient_is_enough():
    with pytest.raises(ValueError, match="no training patients of class 2"):
        cohort_patients(GROUPS, LABELS, label=2, keep=50, subset_seed=0)
    with pytest.raises(ValueError, match="keep=101"):
        cohort_patients(GROUPS, LABELS, label=0, keep=101, subset_seed=0)
    assert cohort_patients(np.array(["a", "a"]), np.array([0, 0]), label=0, keep=50, subset_seed=0).tolist() == ["a"]


def write_prepared_by_hand(root: Path) -> Path:
    """A prepared folder by hand: the 12 train rows of GROUPS/LABELS, listed in index.csv out of row order,
    image i filled with the value i; two test rows that a cohort must never see."""
    root.mkdir()
    train = pd.DataFrame(
        {
            "split": "train",
            "row": np.arange(12),
            "label": LABELS,
            "patient_group": GROUPS,
            "file": [f"train/{i}.jpeg" for i in range(12)],
        }
    )
    test = pd.DataFrame(
        {
            "split": "test",
            "row": [0, 1],
            "label": [0, 1],
            "patient_group": ["x", "y"],
            "file": ["test/0.jpeg", "test/1.jpeg"],
        }
    )
    pd.concat([train.iloc[::-1], test]).to_csv(root / "index.csv", index=False)
    np.save(array_path(root, "train", 4), np.repeat(np.arange(12, dtype=np.uint8), 16).reshape(12, 4, 4))
    np.save(array_path(root, "test", 4), np.full((2, 4, 4), 99, np.uint8))
    return root


def test_load_cohort_reads_the_cohorts_rows_and_the_full_class_counts(tmp_path: Path):
    prepared = write_prepared_by_hand(tmp_path / "prepared")
    np.testing.assert_array_equal(load_prepared(prepared, "train", 4).patients, GROUPS)  # in row order, not index.csv's
    full = load_cohort(prepared, 4, num_classes=3, label=0, keep=100, subset_seed=3)
    np.testing.assert_array_equal(full.images[:, 0, 0], np.arange(12))
    assert full.class_counts == (10, 2, 0)  # num_classes=3: a class without scans counts 0
    half = load_cohort(prepared, 4, num_classes=2, label=0, keep=50, subset_seed=3)
    rows = cohort_rows(GROUPS, LABELS, label=0, keep=50, subset_seed=3)
    # CNV patients b, c, g, h (two scans) of subset seed 3, both NORMAL scans
    assert rows.tolist() == [2, 3, 7, 8, 9, 10, 11]
    np.testing.assert_array_equal(half.images[:, 0, 0], rows)
    np.testing.assert_array_equal(half.labels, LABELS[rows])
    np.testing.assert_array_equal(half.patients, GROUPS[rows])
    assert half.class_counts == (10, 2)  # the whole training split's make-up, which batches are built from


def test_the_validation_split_is_cut_to_the_cohort_as_training_is(tmp_path: Path):
    """A scarce regime selects epochs and curation thresholds on as few patients as it trains on: cohort_of
    with split="val" keeps the regime's share of the validation split's CNV patients, every NORMAL one."""
    prepared = write_prepared_by_hand(tmp_path / "prepared")
    index = pd.read_csv(prepared / "index.csv")
    val = index[index["split"] == "train"].assign(split="val")
    pd.concat([index, val]).to_csv(prepared / "index.csv", index=False)
    np.save(array_path(prepared, "val", 4), np.repeat(np.arange(12, dtype=np.uint8), 16).reshape(12, 4, 4))
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    params = dataclasses.replace(
        params,
        paths=dataclasses.replace(params.paths, prepared=prepared),
        sweep=dataclasses.replace(params.sweep, subset_seed=3),
    )
    scarce, full = cohort_of(params, 50, size=4, split="val"), cohort_of(params, 100, size=4, split="val")
    assert len(np.unique(scarce.patients[scarce.labels == 0])) == 4 and len(full.labels) == 12
    np.testing.assert_array_equal(scarce.images[:, 0, 0], cohort_rows(GROUPS, LABELS, label=0, keep=50, subset_seed=3))


def test_a_cohort_stays_on_disk_until_read(tmp_path: Path):
    """Any cohort is rows of the memory map, read when indexed (a class of the full Kermany set at 512 px is
    10 GB): keep=100 every row, a smaller cohort its own rows, and select() narrows it without reading."""
    prepared = write_prepared_by_hand(tmp_path / "prepared")
    for keep in (100, 50):
        images = load_cohort(prepared, 4, num_classes=2, label=0, keep=keep, subset_seed=3).images
        assert isinstance(images, ScanRows) and isinstance(images.array, np.memmap)
    full = load_cohort(prepared, 4, num_classes=2, label=0, keep=100, subset_seed=3)
    assert len(full.images) == 12 and full.images.shape == (12, 4, 4) and full.images.dtype == np.uint8
    picked = full.images.select(full.labels == 1)
    assert isinstance(picked, ScanRows)
    np.testing.assert_array_equal(picked[:, 0, 0], np.flatnonzero(full.labels == 1))
    np.testing.assert_array_equal(np.stack(list(picked)), np.asarray(full.images)[full.labels == 1])
    assert picked[1].shape == (4, 4) and picked[1][0, 0] == np.flatnonzero(full.labels == 1)[1]


def test_cohort_of_reads_the_regime_that_params_yaml_sets_up(tmp_path: Path):
    """The stages' one call: prepare.classes, sweep.synthetic_class and sweep.subset_seed from params."""
    prepared = write_prepared_by_hand(tmp_path / "prepared")
    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    params = dataclasses.replace(
        params,
        paths=dataclasses.replace(params.paths, prepared=prepared),
        sweep=dataclasses.replace(params.sweep, subset_seed=3),
    )
    assert params.prepare.classes == ("CNV", "NORMAL") and params.sweep.synthetic_class == "CNV"
    expected = load_cohort(prepared, 4, num_classes=2, label=0, keep=50, subset_seed=3)
    got = cohort_of(params, 50, size=4)
    np.testing.assert_array_equal(got.images, expected.images)
    np.testing.assert_array_equal(got.patients, expected.patients)
    assert got.class_counts == expected.class_counts and len(got.labels) == 7


def test_a_cohort_of_several_classes_keeps_that_share_of_each_class_by_its_own_draw():
    groups = np.array([*"aabcdefghh", *"ijklmnop"])
    labels = np.array([0] * 10 + [1] * 4 + [2] * 4)  # class 1: patients i-l; class 2: m-p
    rows = cohort_rows(groups, labels, label=[0, 1], keep=50, subset_seed=3)
    for label in (0, 1):
        chosen = cohort_patients(groups, labels, label=label, keep=50, subset_seed=3)
        assert set(groups[rows][labels[rows] == label]) == set(chosen)
    assert {len(cohort_patients(groups, labels, label=c, keep=50, subset_seed=3)) for c in (0, 1)} == {4, 2}
    assert set(np.flatnonzero(labels == 2)) <= set(rows)  # a class without synthetic scans keeps every patient
    one = cohort_rows(groups, labels, label=0, keep=50, subset_seed=3)
    assert set(one) - set(rows) == set(np.flatnonzero(labels == 1)) - set(rows)  # class 0's rows are the same
