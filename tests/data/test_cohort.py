import numpy as np
import pytest

from synthratio.data.cohort import cohort_patients, cohort_rows

GROUPS = np.array(["a", "a", "b", "c", "d", "e", "f", "g", "h", "h", "i", "j"])
LABELS = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1])  # class 0 (CNV): patients a-h; class 1: i, j


def test_a_cohort_keeps_whole_patients_of_one_class_and_every_other_row():
    rows = cohort_rows(GROUPS, LABELS, 0, 50, subset_seed=3)
    kept = set(GROUPS[rows][LABELS[rows] == 0])
    assert len(kept) == 4  # 50% of 8 patients
    assert all(set(np.flatnonzero(GROUPS == g)) <= set(rows) for g in kept)  # whole patients
    assert {10, 11} <= set(rows)  # the other class untouched


def test_cohorts_are_nested_and_drawn_by_the_subset_seed():
    cohorts = {keep: set(cohort_patients(GROUPS, LABELS, 0, keep, subset_seed=3)) for keep in (100, 75, 50, 25)}
    assert cohorts[25] <= cohorts[50] <= cohorts[75] <= cohorts[100] == set("abcdefgh")
    assert [len(cohorts[k]) for k in (25, 50, 75)] == [2, 4, 6]
    draws = {tuple(cohort_patients(GROUPS, LABELS, 0, 50, subset_seed=s)) for s in range(8)}
    assert len(draws) > 1 and tuple(cohort_patients(GROUPS, LABELS, 0, 50, subset_seed=3)) in draws


def test_a_tiny_cohort_keeps_one_patient_and_bad_keeps_are_refused():
    assert len(cohort_patients(GROUPS, LABELS, 0, 1, subset_seed=0)) == 1
    with pytest.raises(ValueError, match="keep=0; expected a percent of patients in 1..100"):
        cohort_rows(GROUPS, LABELS, 0, 0, subset_seed=0)
