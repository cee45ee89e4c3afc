import warnings

import numpy as np
import pytest
from cleanfid import fid

import synthratio.evaluation.distances as distances_module
from synthratio.evaluation.distances import distance_pair, feature_distances, frechet_distance
from synthratio.evaluation.halves import patient_halves


def test_fid_matches_closed_form():
    # means 1 and 3, variances 2 and 8: (1 - 3)^2 + 2 + 8 - 2 sqrt(2 * 8) = 6
    pair = distance_pair(np.array([[0.0], [2.0]]), np.array([[1.0], [5.0]]), kid_subset_size=2)
    assert pair.fid == pytest.approx(6.0)


@pytest.mark.parametrize("n, d", [(40, 3), (10, 32)])  # full-rank and singular covariances
def test_fid_agrees_with_clean_fid(n: int, d: int):
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, d)), rng.normal(0.2, 1.5, size=(n, d))
    stats = (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy's sqrtm(disp=...) inside clean-fid
        expected = fid.frechet_distance(*stats)
    assert frechet_distance(*stats) == pytest.approx(expected, rel=1e-6)


def test_feature_distances_fixed_numbers_and_global_rng_untouched():
    rng = np.random.default_rng(0)
    real = rng.normal(0.0, 1.0, (40, 3))
    synthetic = rng.normal(0.5, 1.0, (30, 3))
    np.random.seed(123)
    state = np.random.get_state()

    result = feature_distances(synthetic, real, np.arange(40) // 2, kid_subset_size=10, seed=0, splits=3)

    # 20 patients of 2 scans: a half holds 10 patients, compared one scan each
    assert {k: round(v, 4) for k, v in result.items()} == {
        "fid": 0.9148, "kid": 0.0269, "precision": 0.9667, "recall": 0.9833, "density": 0.9533, "coverage": 0.9167,
        "fid_floor": 0.826, "kid_floor": 0.1957, "precision_floor": 1.0, "recall_floor": 0.9833,
        "density_floor": 1.1133, "coverage_floor": 0.95,
        "fid_floor_sd": 0.5142, "kid_floor_sd": 0.747, "precision_floor_sd": 0.0,
        "recall_floor_sd": 0.0289, "density_floor_sd": 0.4562, "coverage_floor_sd": 0.0866,
        "n_synthetic": 30, "n_real_half": 20, "n_compared": 10, "n_compared_patients": 10, "nearest_k": 5,
        "floor_splits": 3,
    }  # fmt: skip
    assert feature_distances(synthetic, real, np.arange(40) // 2, kid_subset_size=10, seed=0, splits=3) == result
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])


def test_floor_is_small_and_a_shifted_set_scores_far_above_it(scans):
    real = scans(64, seed=0).reshape(64, -1).astype(np.float64) / 255
    same = scans(32, seed=1).reshape(32, -1).astype(np.float64) / 255

    groups = np.arange(64) // 2
    near = feature_distances(same, real, groups, kid_subset_size=16)
    far = feature_distances(np.clip(same + 0.3, 0, 1), real, groups, kid_subset_size=16)

    assert near["fid_floor"] == far["fid_floor"]
    assert near["fid"] < 2 * near["fid_floor"]
    assert far["fid"] > 4 * max(near["fid"], near["fid_floor"])
    assert far["kid"] > 10 * max(abs(near["kid"]), abs(near["kid_floor"]))


def test_fewer_synthetic_than_half_the_real_rows_cuts_both_compared_sets_and_k():
    rng = np.random.default_rng(0)
    result = feature_distances(
        rng.normal(size=(5, 2)), rng.normal(size=(20, 2)), np.arange(20), kid_subset_size=50, nearest_k=5
    )
    assert (result["n_synthetic"], result["n_real_half"], result["n_compared"], result["nearest_k"]) == (5, 10, 5, 4)


def test_patient_halves_share_no_patient_and_cover_every_row():
    groups = np.repeat(np.arange(7), [1, 3, 2, 2, 4, 1, 2])
    first, second = patient_halves(groups, np.random.default_rng(0))
    assert sorted(np.concatenate([first, second])) == list(range(len(groups)))
    assert not set(groups[first]) & set(groups[second])
    assert abs(len(first) - len(second)) <= 4  # dealt by whole patients: about half the rows each
    with pytest.raises(ValueError, match="1 patient group"):
        patient_halves(np.zeros(5), np.random.default_rng(0))


def test_floor_does_not_find_a_patients_own_scans_in_the_other_half():
    """Each patient brings three near-copies of one scan. Split scan by scan, every half-B scan has a copy in
    half A and the floor's coverage and recall are about 1; split by patient (and compared one scan a
    patient), the floor is what a scan of a new patient scores, and a generator of new patients sits on it."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 6))
    real = np.repeat(base, 3, axis=0) + rng.normal(0, 0.01, (120, 6))
    groups = np.repeat(np.arange(40), 3)
    synthetic = rng.normal(size=(60, 6))
    by_patient = feature_distances(synthetic, real, groups, kid_subset_size=20, splits=5)
    by_scan = feature_distances(synthetic, real, np.arange(120), kid_subset_size=20, splits=5)
    assert by_scan["coverage_floor"] > 0.95 and by_scan["recall_floor"] > 0.95
    assert by_patient["coverage_floor"] < 0.85
    assert by_patient["fid_floor"] > 3 * by_scan["fid_floor"]
    assert by_patient["fid_floor_sd"] > 0  # several halvings: the floor comes with its spread
    # measured: FID 1.97 against the floor's 1.87 (sd 0.65), coverage 0.41 against 0.41
    assert abs(by_patient["fid"] - by_patient["fid_floor"]) < by_patient["fid_floor_sd"]
    assert abs(by_patient["coverage"] - by_patient["coverage_floor"]) < 0.05
    assert (by_patient["n_compared"], by_patient["n_compared_patients"], by_scan["n_compared"]) == (20, 20, 60)


@pytest.mark.parametrize(("n_synthetic", "compared"), [(100, 6), (5, 5)])  # B holds 8, 6 and 7 patients
def test_the_compared_sets_hold_one_scan_per_patient(monkeypatch: pytest.MonkeyPatch, n_synthetic, compared):
    """16 patients of 1 to 6 scans: half B is compared as one scan each of n_compared of its patients, and the
    synthetic set as n_compared scans, n_compared = min(n_synthetic, patients of B) over the halvings."""
    compared_rows = []

    def recorded(x: np.ndarray, y: np.ndarray, **kwargs):
        compared_rows.append(x)
        return distance_pair(x, y, **kwargs)

    monkeypatch.setattr(distances_module, "distance_pair", recorded)
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(16), rng.integers(1, 7, 16))
    real = np.c_[groups, rng.normal(size=len(groups))]  # column 0 names each row's patient
    result = feature_distances(rng.normal(size=(n_synthetic, 2)), real, groups, kid_subset_size=4, splits=3)
    patients_of_b = [
        len(np.unique(groups[b])) for _, b in (patient_halves(groups, np.random.default_rng([0, j])) for j in range(3))
    ]
    assert result["n_compared"] == result["n_compared_patients"] == min(n_synthetic, *patients_of_b) == compared
    versus, floor = compared_rows[0::2], compared_rows[1::2]  # synthetic, then B, in every halving
    assert all(len(rows) == compared for rows in versus + floor)
    assert all(len(np.unique(rows[:, 0])) == compared for rows in floor)  # each a different patient


@pytest.mark.parametrize("n_synthetic, n_real", [(10, 3), (1, 10)])
def test_too_few_rows_named(n_synthetic: int, n_real: int):
    with pytest.raises(ValueError, match=f"{n_synthetic} synthetic and {n_real} real"):
        feature_distances(np.zeros((n_synthetic, 2)), np.zeros((n_real, 2)), np.arange(n_real), kid_subset_size=4)


def test_the_smallest_sets_that_work_and_those_that_do_not():
    rng = np.random.default_rng(2)
    smallest = feature_distances(rng.normal(size=(2, 3)), rng.normal(size=(4, 3)), np.arange(4), kid_subset_size=2)
    assert (smallest["n_compared"], smallest["nearest_k"], smallest["floor_splits"], smallest["fid_floor_sd"]) == (
        2,
        1,
        1,
        0.0,
    )
    real = rng.normal(size=(6, 3))
    with pytest.raises(ValueError, match=r"a patient-disjoint half holds 1 patient\(s\)"):
        feature_distances(rng.normal(size=(4, 3)), real, np.array([0, 0, 0, 0, 0, 1]), kid_subset_size=2)
    with pytest.raises(ValueError, match="5 patient groups for 6 real feature rows"):
        feature_distances(rng.normal(size=(4, 3)), real, np.arange(5), kid_subset_size=2)
    assert (
        feature_distances(rng.normal(size=(4, 3)), real, np.arange(6), kid_subset_size=2, nearest_k=1)["nearest_k"] == 1
    )
    two = feature_distances(rng.normal(size=(4, 3)), real, np.arange(6), kid_subset_size=2, splits=2)
    assert two["floor_splits"] == 2 and two["fid_floor_sd"] > 0  # two halvings: the floor's spread over them
    for k, splits in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match=f"nearest_k={k}, splits={splits}; expected counts >= 1"):
            feature_distances(
                rng.normal(size=(4, 3)), real, np.arange(6), kid_subset_size=2, nearest_k=k, splits=splits
            )
    for synthetic, other in ((np.zeros((4, 2)), real), (np.zeros(4), real), (rng.normal(size=(4, 3)), np.zeros(6))):
        with pytest.raises(ValueError, match="expected \\(N, D\\) and \\(M, D\\)"):
            feature_distances(synthetic, other, np.arange(len(other)), kid_subset_size=2)


def test_kid_subsets_are_capped_by_the_smaller_set_and_seeded():
    """A subset cannot be larger than either set; the seed picks the subsets (and so KID), not the global RNG."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, 2)), rng.normal(0.5, 1.0, size=(9, 2))
    pair = distance_pair(x, y, kid_subset_size=1000, seed=3)
    np.random.seed(0)
    assert distance_pair(x, y, kid_subset_size=1000, seed=3) == pair
    assert distance_pair(x, y, kid_subset_size=6, seed=3).kid == pair.kid  # 6 = min(1000, 6, 9)
    assert distance_pair(x, y, kid_subset_size=5, seed=3).kid != pair.kid
    assert distance_pair(x, y, kid_subset_size=5, seed=4).kid != distance_pair(x, y, kid_subset_size=5, seed=3).kid
    assert distance_pair(x, y, kid_subset_size=6, seed=3).fid == pytest.approx(
        frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    )
    assert distance_pair(y, x, kid_subset_size=1000, seed=3).kid == pytest.approx(
        distance_pair(y, x, kid_subset_size=6, seed=3).kid
    )
    assert distance_pair(x, y, kid_subset_size=5) == distance_pair(x, y, kid_subset_size=5, seed=0)  # the default seed


def test_features_are_compared_in_float64_whatever_they_come_in():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(12, 4)).astype(np.float32), rng.normal(0.3, 1.0, size=(10, 4)).astype(np.float32)
    assert distance_pair(x, y, kid_subset_size=5) == distance_pair(
        x.astype(np.float64), y.astype(np.float64), kid_subset_size=5
    )


def test_feature_distances_kid_subsets_follow_the_seed():
    """The seed draws the halvings, the subsamples and KID's subsets: pinned for seed 1 as for seed 0 above."""
    rng = np.random.default_rng(0)
    real, synthetic = rng.normal(0.0, 1.0, (40, 3)), rng.normal(0.5, 1.0, (30, 3))
    result = feature_distances(synthetic, real, np.arange(40) // 2, kid_subset_size=10, seed=1, splits=2)
    assert {key: round(result[key], 4) for key in ("fid", "kid", "fid_floor", "kid_floor")} == {
        "fid": 1.2312,
        "kid": 1.0144,
        "fid_floor": 0.7412,
        "kid_floor": 0.2245,
    }


def test_feature_distances_default_seed_is_zero():
    """Stages that do not pass a seed get the pinned seed-0 numbers (halvings, subsamples, KID subsets)."""
    rng = np.random.default_rng(1)
    real, synthetic = rng.normal(size=(12, 2)), rng.normal(size=(8, 2))
    assert feature_distances(synthetic, real, np.arange(12) // 2, kid_subset_size=4) == feature_distances(
        synthetic, real, np.arange(12) // 2, kid_subset_size=4, seed=0
    )
