import numpy as np
import pytest

from synthratio.inference import (
    Runs,
    bootstrap,
    cluster_draws,
    fixed_sequence,
    holm,
    improvement,
    interval,
    non_inferiority,
    paired_permutation_p,
    per_seed,
    point,
)


def runs_from_hits(hits: np.ndarray, patients: np.ndarray | None = None, confident: float = 0.9) -> Runs:
    """Two-class runs whose class-0 probability is right (confident) where hits is 1, per (seed, scan)."""
    hits = np.atleast_2d(hits).astype(bool)
    labels = np.zeros(hits.shape[1], dtype=int)
    labels[1::2] = 1
    p_true = np.where(hits, confident, 1 - confident)
    p0 = np.where(labels == 0, p_true, 1 - p_true)
    probs = np.stack([p0, 1 - p0], axis=2)
    return Runs(probs=probs, labels=labels, patients=np.arange(hits.shape[1]) if patients is None else patients)


def test_scores_and_point_metrics():
    runs = runs_from_hits(np.array([[1, 1, 0, 1], [1, 0, 0, 1]]))
    assert point(runs, "accuracy") == pytest.approx((0.75 + 0.5) / 2)
    assert point(runs, "log_loss") == pytest.approx(-(5 * np.log(0.9) + 3 * np.log(0.1)) / 8)
    np.testing.assert_allclose(per_seed(runs, "auroc"), [0.75, 0.5])  # labels 0,1,0,1; p(class 0) ranks them


def test_improvement_is_positive_when_better_whatever_the_metric():
    assert improvement(0.9, 0.8, "accuracy") == pytest.approx(0.1)
    assert improvement(0.3, 0.5, "log_loss") == pytest.approx(0.2)  # a lower loss is better
    assert improvement(0.7, 0.8, "auroc") == pytest.approx(-0.1)


def test_paired_draws_of_identical_runs_differ_by_nothing_and_seeds_are_resampled():
    rng = np.random.default_rng(0)
    runs = runs_from_hits(rng.integers(0, 2, size=(2, 50)))
    draws = cluster_draws(runs.patients, n_seeds=2, resamples=200, seed=1)
    np.testing.assert_array_equal(bootstrap(runs, "accuracy", draws), bootstrap(runs, "accuracy", draws))
    one_seed_right = runs_from_hits(np.stack([np.ones(50), np.zeros(50)]))
    values = bootstrap(one_seed_right, "accuracy", cluster_draws(one_seed_right.patients, 2, 400, seed=2))
    assert set(np.round(np.unique(values), 9)) == {0.0, 0.5, 1.0}  # seeds are drawn with replacement


def test_interval_pinned_for_a_fixed_seed():
    """One seeded check against fixed numbers: 60 patients of two scans, 80% right."""
    hits = np.random.default_rng(3).random((2, 120)) < 0.8
    runs = runs_from_hits(hits, patients=np.arange(120) // 2)
    low, high = interval(bootstrap(runs, "accuracy", cluster_draws(runs.patients, 2, 1000, seed=0)), 0.95)
    assert (round(point(runs, "accuracy"), 4), round(low, 4), round(high, 4)) == (0.825, 0.7583, 0.8917)


def test_interval_widens_when_a_patient_brings_many_copies_of_one_scan():
    """Five identical scans per patient carry the information of one: the patient bootstrap keeps the
    one-scan interval, a scan-level bootstrap would shrink it by about sqrt(5)."""
    hits = np.random.default_rng(4).random((1, 200)) < 0.7
    copies = np.repeat(hits, 5, axis=1)
    width = lambda runs: np.subtract(*interval(bootstrap(runs, "accuracy", cluster_draws(runs.patients, 1, 2000, 0)), 0.95)[::-1])  # noqa: E731
    one_each = width(runs_from_hits(hits))
    by_patient = width(runs_from_hits(copies, patients=np.repeat(np.arange(200), 5)))
    by_scan = width(runs_from_hits(copies))
    assert by_patient == pytest.approx(one_each, rel=0.15)
    assert by_patient > 1.8 * by_scan


def test_stratified_draws_keep_each_strata_patient_count():
    patients = np.repeat(np.arange(10), 2)
    labels = (np.arange(20) >= 14).astype(int)  # patients 0-6 class 0, 7-9 class 1
    draws = cluster_draws(patients, 1, 300, seed=0, strata=labels)
    np.testing.assert_array_equal(draws.weights[:, labels == 1].sum(axis=1), 6)  # 3 patients x 2 scans, every draw
    np.testing.assert_array_equal(draws.weights.sum(axis=1), 20)
    assert len(np.unique(draws.weights[:, labels == 1], axis=0)) > 1  # resampled within the stratum


@pytest.mark.parametrize(
    ("delta", "draws", "verdict"),
    [
        (0.0, np.linspace(-0.01, 0.01, 101), "non-inferior"),  # lower bound -0.009 > -0.02
        (-0.05, np.linspace(-0.06, -0.04, 101), "inferior"),  # upper bound -0.041 < -0.02
        (0.0, np.linspace(-0.05, 0.05, 101), "inconclusive"),  # bounds -0.045 and +0.045 straddle -0.02
    ],
)
def test_non_inferiority_verdicts(delta: float, draws: np.ndarray, verdict: str):
    result = non_inferiority(delta, draws, margin=0.02, confidence=0.95)
    assert result.verdict == verdict
    assert result.lower == pytest.approx(np.quantile(draws, 0.05)) and result.upper == pytest.approx(np.quantile(draws, 0.95))
    assert result.half_width == pytest.approx(max(delta - result.lower, 0.0))


def test_fixed_sequence_stops_at_the_first_r_not_shown():
    shown = fixed_sequence({25: "non-inferior", 50: "inferior", 75: "non-inferior", 100: "non-inferior"})
    assert (shown.shown, shown.stopped_at, shown.stop_verdict, shown.r_max) == (25, 50, "inferior", 25)
    unknown = fixed_sequence({25: "non-inferior", 50: "inconclusive", 100: "non-inferior"})
    assert (unknown.shown, unknown.r_max) == (25, None)  # no number where the data cannot tell
    assert fixed_sequence({50: "non-inferior", 25: "non-inferior"}).r_max == 50
    assert fixed_sequence({25: "inferior", 100: "non-inferior"}).r_max == 0


def test_permutation_p_is_exact_for_few_patients_and_counts_each_scan_once():
    reference = runs_from_hits(np.zeros((1, 8)), patients=np.arange(8) // 2)
    better = runs_from_hits(np.ones((1, 8)), patients=np.arange(8) // 2)
    assert paired_permutation_p(better, reference, "accuracy", permutations=100, seed=0) == pytest.approx(2 / 16)
    rng = np.random.default_rng(5)
    a = rng.random((1, 300)) < 0.8
    b = a.copy()
    b[0, np.flatnonzero(a[0])[:20]] = False  # 20 scans lost, 3 gained
    b[0, np.flatnonzero(~a[0])[:3]] = True
    once = paired_permutation_p(runs_from_hits(a), runs_from_hits(b), "accuracy", 4000, seed=0)
    twice = paired_permutation_p(runs_from_hits(np.repeat(a, 2, 0)), runs_from_hits(np.repeat(b, 2, 0)), "accuracy", 4000, seed=0)
    assert once == twice  # one seed's predictions fed in twice: the same evidence, the same p
    assert 0.0 < once < 0.05


def test_permutation_p_of_equal_runs_is_one_and_of_a_clear_auroc_gain_is_small():
    rng = np.random.default_rng(6)
    runs = runs_from_hits(rng.random((2, 40)) < 0.7)
    assert paired_permutation_p(runs, runs, "accuracy", 500, seed=0) == 1.0
    labels = np.tile([0, 1], 40)
    sharp = np.where(labels == 0, 0.9, 0.1)[None] + rng.normal(0, 0.05, (1, 80))
    vague = np.where(labels == 0, 0.55, 0.45)[None] + rng.normal(0, 0.2, (1, 80))
    as_runs = lambda p0: Runs(probs=np.stack([p0, 1 - p0], 2).clip(0, 1), labels=labels, patients=np.arange(80))  # noqa: E731
    assert paired_permutation_p(as_runs(sharp), as_runs(vague), "auroc", 1000, seed=0) < 0.01


def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []
