import numpy as np
import pytest

from synthratio.evaluation.halves import one_scan_per_patient, patient_halves


@pytest.mark.parametrize("n", [2, 7, 8])
def test_one_scan_per_patient_splits_as_evenly_as_possible(n: int):
    """Patients are dealt to the first half until it holds half of the rows: with one scan each that is
    ceil(n / 2) rows against floor(n / 2), whatever the shuffle (the floor's set sizes depend on it)."""
    for seed in range(5):
        first, second = patient_halves(np.arange(n) * 10, np.random.default_rng(seed))
        assert (len(first), len(second)) == ((n + 1) // 2, n // 2)
        assert sorted(np.concatenate([first, second])) == list(range(n))


def test_a_patient_holding_most_scans_never_leaves_a_half_empty_and_stops_the_dealing():
    """Patient 0 holds 6 of 8 scans. Dealt first, it is a half on its own (6 against 2: no other patient is
    dragged along once half the rows are in); dealt last, the others make the first half and it the second.
    Either way both halves hold a patient (an empty half has no floor, no threshold, no test part)."""
    groups = np.array([0, 0, 0, 0, 0, 0, 1, 2])
    seen = set()
    for seed in range(30):
        first, second = patient_halves(groups, np.random.default_rng(seed))
        assert len(first) and len(second)
        assert not set(groups[first]) & set(groups[second])
        seen.add(tuple(sorted(set(groups[first].tolist()))))
    assert (0,) in seen  # dealt first: alone in the first half
    assert (1, 2) in seen  # dealt last: the first half is the two others


def test_two_patients_make_two_halves_of_one_patient_each():
    for seed in range(10):
        first, second = patient_halves(np.array(["b", "a", "a", "a", "b"]), np.random.default_rng(seed))
        assert {len(first), len(second)} == {2, 3}


def test_one_scan_per_patient_takes_each_patient_once_and_every_scan_sometimes():
    """Rows 2..11 of patients a (4 rows), b (1), c (5): one row each, the patients in random order, and over
    draws every row of a patient is the one taken (not always its first scan)."""
    groups = np.array(["z", "z", "a", "a", "a", "a", "b", "c", "c", "c", "c", "c"])
    rows = np.arange(2, 12)
    taken, orders = set(), set()
    for seed in range(200):
        chosen = one_scan_per_patient(rows, groups, np.random.default_rng(seed))
        assert sorted(groups[chosen]) == ["a", "b", "c"]
        taken.update(chosen.tolist())
        orders.add("".join(groups[chosen]))
    assert taken == set(rows.tolist())
    assert len(orders) == 6  # every order of the three patients: its first n rows are n random patients
