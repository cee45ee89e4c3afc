import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from synthratio.inference import (
    Draws,
    FixedSequence,
    Runs,
    _auroc_rows,
    _sign_patterns,
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
    values = bootstrap(
        one_seed_right, "accuracy", cluster_draws(one_seed_right.patients, n_seeds=2, resamples=400, seed=2)
    )
    assert set(np.round(np.unique(values), 9)) == {0.0, 0.5, 1.0}  # seeds are drawn with replacement


def test_interval_pinned_for_a_fixed_seed():
    """One seeded check against fixed numbers: 60 patients of two scans, 80% right."""
    hits = np.random.default_rng(3).random((2, 120)) < 0.8
    runs = runs_from_hits(hits, patients=np.arange(120) // 2)
    low, high = interval(
        bootstrap(runs, "accuracy", cluster_draws(runs.patients, n_seeds=2, resamples=1000, seed=0)), 0.95
    )
    assert (round(point(runs, "accuracy"), 4), round(low, 4), round(high, 4)) == (0.825, 0.7583, 0.8917)


def test_interval_widens_when_a_patient_brings_many_copies_of_one_scan():
    """Five identical scans per patient carry the information of one: the patient bootstrap keeps the
    one-scan interval, a scan-level bootstrap would shrink it by about sqrt(5)."""
    hits = np.random.default_rng(4).random((1, 200)) < 0.7
    copies = np.repeat(hits, 5, axis=1)

    def width(runs: Runs) -> float:
        draws = cluster_draws(runs.patients, n_seeds=1, resamples=2000, seed=0)
        return np.subtract(*interval(bootstrap(runs, "accuracy", draws), 0.95)[::-1])

    one_each = width(runs_from_hits(hits))
    by_patient = width(runs_from_hits(copies, patients=np.repeat(np.arange(200), 5)))
    by_scan = width(runs_from_hits(copies))
    assert by_patient == pytest.approx(one_each, rel=0.15)
    assert by_patient > 1.8 * by_scan


def test_stratified_draws_keep_each_strata_patient_count():
    patients = np.repeat(np.arange(10), 2)
    labels = (np.arange(20) >= 14).astype(int)  # patients 0-6 class 0, 7-9 class 1
    draws = cluster_draws(patients, n_seeds=1, resamples=300, seed=0, strata=labels)
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
    assert result.lower == pytest.approx(np.quantile(draws, 0.05)) and result.upper == pytest.approx(
        np.quantile(draws, 0.95)
    )
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
    once = paired_permutation_p(runs_from_hits(a), runs_from_hits(b), "accuracy", permutations=4000, seed=0)
    twice = paired_permutation_p(
        runs_from_hits(np.repeat(a, 2, 0)), runs_from_hits(np.repeat(b, 2, 0)), "accuracy", permutations=4000, seed=0
    )
    assert once == twice  # one seed's predictions fed in twice: the same evidence, the same p
    assert 0.0 < once < 0.05


def test_permutation_p_of_equal_runs_is_one_and_of_a_clear_auroc_gain_is_small():
    rng = np.random.default_rng(6)
    runs = runs_from_hits(rng.random((2, 40)) < 0.7)
    assert paired_permutation_p(runs, runs, "accuracy", permutations=500, seed=0) == 1.0
    labels = np.tile([0, 1], 40)
    sharp = np.where(labels == 0, 0.9, 0.1)[None] + rng.normal(0, 0.05, (1, 80))
    vague = np.where(labels == 0, 0.55, 0.45)[None] + rng.normal(0, 0.2, (1, 80))

    def as_runs(p0: np.ndarray) -> Runs:
        return Runs(probs=np.stack([p0, 1 - p0], 2).clip(0, 1), labels=labels, patients=np.arange(80))

    assert paired_permutation_p(as_runs(sharp), as_runs(vague), "auroc", permutations=1000, seed=0) < 0.01


def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []


# --- each piece against an independent computation ---


def test_runs_refuse_shapes_that_do_not_pair_probs_labels_and_patients():
    for probs, labels, patients in [(np.zeros((2, 3, 2)), np.zeros(4, int), np.arange(4)),
                                    (np.zeros((2, 4, 2)), np.zeros(4, int), np.arange(3)),
                                    (np.zeros((4, 2)), np.zeros(4, int), np.arange(4))]:  # fmt: skip
        with pytest.raises(
            ValueError, match=r"expected \(seeds, scans, classes\) with one label and one patient per scan"
        ):
            Runs(probs=probs, labels=labels, patients=patients)
    with pytest.raises(ValueError, match=r"metric='f1'; expected one of \['accuracy', 'log_loss', 'auroc'\]"):
        runs_from_hits(np.ones((1, 4))).scores("f1")


def test_log_loss_clips_a_zero_probability_and_auroc_ranks_the_positive_class():
    runs = Runs(
        probs=np.array([[[0.0, 1.0], [0.8, 0.2], [0.3, 0.7]]]), labels=np.array([0, 0, 1]), patients=np.arange(3)
    )
    np.testing.assert_allclose(runs.scores("log_loss"), [[np.log(np.finfo(float).eps), np.log(0.8), np.log(0.7)]])
    assert point(runs, "log_loss") == pytest.approx(-(np.log(np.finfo(float).eps) + np.log(0.8) + np.log(0.7)) / 3)
    p0, p2 = np.array([0.1, 0.3, 0.5, 0.4]), np.array([0.1, 0.6, 0.3, 0.5])
    three = np.stack([p0, 1 - p0 - p2, p2], axis=1)[None]  # three classes: the positive class's own column is ranked
    labels = np.array([0, 2, 1, 2])
    assert point(Runs(probs=three, labels=labels, patients=np.arange(4), positive=2), "auroc") == 1.0
    assert point(Runs(probs=three, labels=labels, patients=np.arange(4), positive=0), "auroc") == 0.0


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "auroc"])
def test_weighted_metrics_are_the_metric_of_the_drawn_scans_repeated(metric: str):
    """A draw's weights are multiplicities: the metric with weights equals the metric on the scans repeated."""
    rng = np.random.default_rng(7)
    p0 = rng.random((3, 12))
    runs = Runs(probs=np.stack([p0, 1 - p0], axis=2), labels=np.tile([0, 1], 6), patients=np.arange(12))
    weights = rng.integers(0, 4, size=(5, 12)).astype(float)
    weights[:, :2] = [1, 1]  # both classes in every draw
    for draw, w in zip(per_seed(runs, metric, weights), weights.astype(int)):
        repeated = Runs(
            probs=np.repeat(runs.probs, w, axis=1),
            labels=np.repeat(runs.labels, w),
            patients=np.repeat(runs.patients, w),
        )
        np.testing.assert_allclose(draw, per_seed(repeated, metric), rtol=1e-12)


def test_bootstrap_averages_the_seeds_each_draw_picked():
    runs = runs_from_hits(np.array([[1, 1, 1, 1], [1, 0, 0, 0]]))  # seed 0: accuracy 1, seed 1: 0.25
    draws = Draws(weights=np.ones((3, 4)), seeds=np.array([[0, 0], [1, 1], [0, 1]]))
    np.testing.assert_allclose(bootstrap(runs, "accuracy", draws), [1.0, 0.25, 0.625])


def test_cluster_draws_move_a_patients_scans_together_and_keep_each_stratum_whole():
    patients = np.array([5, 5, 9, 2, 2, 2, 7, 7])
    strata = np.array([0, 1, 0, 1, 1, 1, 1, 1])  # patient 5's first scan is class 0: its stratum is 0
    draws = cluster_draws(patients, n_seeds=3, resamples=2000, seed=4, strata=strata)
    assert draws.weights.shape == (2000, 8) and draws.seeds.shape == (2000, 3)
    for patient in np.unique(patients):
        scans = draws.weights[:, patients == patient]
        assert (scans == scans[:, :1]).all()  # every scan of a drawn patient comes along as often
    per_patient = draws.weights[:, [0, 2, 3, 6]]  # one scan of patients 5, 9, 2, 7
    np.testing.assert_array_equal(per_patient[:, :2].sum(axis=1), 2)  # stratum 0: patients 5 and 9, two drawn each time
    np.testing.assert_array_equal(per_patient[:, 2:].sum(axis=1), 2)  # stratum 1: patients 2 and 7
    np.testing.assert_allclose(
        per_patient.mean(axis=0), 1.0, atol=0.06
    )  # each patient drawn once per resample on average
    assert set(np.unique(draws.seeds)) == {0, 1, 2}
    np.testing.assert_allclose(np.bincount(draws.seeds.ravel()) / draws.seeds.size, 1 / 3, atol=0.02)
    unstratified = cluster_draws(patients, n_seeds=1, resamples=2000, seed=4)
    np.testing.assert_allclose(unstratified.weights[:, [0, 2, 3, 6]].sum(axis=1).mean(), 4.0)  # four patients per draw
    assert (unstratified.weights[:, [0, 2]].sum(axis=1) != 2).any()  # without strata, stratum 0 may come out short


def test_cluster_draws_pinned_for_a_fixed_seed():
    draws = cluster_draws(np.array([0, 0, 1, 2]), n_seeds=2, resamples=3, seed=0, strata=np.array([0, 0, 1, 1]))
    assert draws.weights.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 2]]  # patient 0 alone in its stratum
    assert draws.seeds.tolist() == [[0, 0], [0, 1], [1, 1]]


@pytest.mark.parametrize(
    ("metric", "expected"),
    [("accuracy", (0.8292, 0.775, 0.8833)), ("log_loss", (0.3852, 0.3304, 0.4394)), ("auroc", (0.9546, 0.928, 0.9775))],
)
def test_stratified_intervals_pinned_for_a_fixed_seed(metric: str, expected: tuple[float, float, float]):
    """60 patients of two scans, both scans of a patient of one class, two seeds; 1000 stratified draws, seed 0."""
    rng = np.random.default_rng(11)
    labels = np.repeat(np.arange(60) % 2, 2)
    p_true = np.where(rng.random((2, 120)) < 0.8, 0.8, 0.3) + rng.normal(0, 0.05, (2, 120))
    p0 = np.where(labels == 0, p_true, 1 - p_true).clip(0.01, 0.99)
    runs = Runs(probs=np.stack([p0, 1 - p0], axis=2), labels=labels, patients=np.arange(120) // 2)
    draws = cluster_draws(runs.patients, n_seeds=2, resamples=1000, seed=0, strata=labels)
    low, high = interval(bootstrap(runs, metric, draws), 0.95)
    assert (round(point(runs, metric), 4), round(low, 4), round(high, 4)) == expected


def test_interval_takes_both_tails_at_half_the_rest():
    assert interval(np.arange(101.0), 0.9) == pytest.approx((5.0, 95.0))
    assert interval(np.arange(101.0), 0.5) == pytest.approx((25.0, 75.0))


def test_a_bound_exactly_at_the_margin_shows_nothing_and_half_width_is_never_negative():
    at_margin = non_inferiority(0.0, np.full(50, -0.02), margin=0.02, confidence=0.95)
    assert (at_margin.lower, at_margin.upper, at_margin.verdict) == (
        -0.02,
        -0.02,
        "inconclusive",
    )  # neither > nor < -margin
    above = non_inferiority(-0.05, np.linspace(0.0, 0.1, 101), margin=0.02, confidence=0.9)
    assert (above.lower, above.upper, above.half_width, above.delta) == (
        pytest.approx(0.01),
        pytest.approx(0.09),
        0.0,
        -0.05,
    )
    assert fixed_sequence({}) == FixedSequence(shown=0, stopped_at=None, stop_verdict=None)
    assert fixed_sequence({25: "non-inferior", 50: "non-inferior"}).r_max == 50


def test_sign_patterns_are_every_pattern_up_to_12_patients_then_random():
    rng = np.random.default_rng(0)
    three, exact = _sign_patterns(3, 100, rng)
    assert exact and sorted(map(tuple, three)) == sorted(itertools.product([-1, 1], repeat=3))
    twelve, exact = _sign_patterns(12, 100, rng)
    assert exact and twelve.shape == (4096, 12) and len(np.unique(twelve, axis=0)) == 4096
    drawn, exact = _sign_patterns(13, 500, rng)
    assert not exact and drawn.shape == (500, 13) and set(np.unique(drawn)) == {-1, 1}
    assert 0.45 < (drawn == 1).mean() < 0.55


def test_auroc_rows_match_sklearn_with_ties():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=(6, 20)).astype(float)  # many ties
    positive = np.arange(20) % 3 == 0
    np.testing.assert_allclose(_auroc_rows(scores, positive), [roc_auc_score(positive, row) for row in scores])


def brute_force_p(candidate: Runs, reference: Runs, metric: str) -> float:
    """Two-sided p by swapping the two runs' predictions of each patient in every possible way (sklearn's AUROC)."""
    names = np.unique(candidate.patients)

    def statistic(swap: np.ndarray) -> float:
        moved = np.isin(candidate.patients, names[swap])
        first = np.where(moved[None, :, None], reference.probs, candidate.probs)
        second = np.where(moved[None, :, None], candidate.probs, reference.probs)
        runs = [
            Runs(probs=p, labels=candidate.labels, patients=candidate.patients, positive=candidate.positive)
            for p in (first, second)
        ]
        return point(runs[0], metric) - point(runs[1], metric)

    observed = abs(statistic(np.zeros(len(names), bool)))
    values = [abs(statistic(np.array(swap, bool))) for swap in itertools.product([0, 1], repeat=len(names))]
    return float(np.mean([v >= observed - 1e-12 for v in values]))


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "auroc"])
def test_exact_permutation_p_matches_swapping_every_patients_predictions(metric: str):
    """Seven patients (one to three scans each), two seeds: p by brute force over all 128 swaps."""
    rng = np.random.default_rng(8)
    patients = np.array([0, 0, 1, 2, 2, 2, 3, 4, 4, 5, 6, 6])
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 0, 0, 1, 1, 0])
    a, b = rng.random((2, 12)), rng.random((2, 12))

    def as_runs(p0: np.ndarray) -> Runs:
        return Runs(probs=np.stack([p0, 1 - p0], axis=2), labels=labels, patients=patients)

    expected = brute_force_p(as_runs(a), as_runs(b), metric)
    assert paired_permutation_p(as_runs(a), as_runs(b), metric, permutations=10, seed=0) == pytest.approx(expected)
    assert paired_permutation_p(as_runs(a), as_runs(b), metric, permutations=10, seed=0, chunk=5) == pytest.approx(
        expected
    )
    assert 0 < expected < 1


def test_exact_p_by_hand():
    """Per-patient differences 1, 1, 1, 3 (accuracy over 4 patients of 1-2 scans): |sum| reaches 6 only with
    every sign alike: p = 2 / 16. The observed pattern itself counts."""
    hits = np.array([[1, 1, 1, 1, 1, 1]])
    patients = np.array([0, 1, 2, 3, 3, 3])
    reference = runs_from_hits(np.zeros((1, 6)), patients=patients)
    assert paired_permutation_p(
        runs_from_hits(hits, patients=patients), reference, "accuracy", permutations=10, seed=0
    ) == pytest.approx(2 / 16)


MONTE_CARLO_PATIENTS = np.repeat(np.arange(14), 2)
MONTE_CARLO_A = np.ones((1, 28))
MONTE_CARLO_A[0, 10] = 0  # patient 5: the candidate misses a scan the reference gets
MONTE_CARLO_B = np.ones((1, 28))
MONTE_CARLO_B[0, [0, 2, 4, 6, 8]] = 0  # patients 0-4: the reference misses one scan each


@pytest.mark.parametrize("seed", range(5))
def test_monte_carlo_p_is_near_the_exact_p_for_every_seed(seed: int):
    """14 patients (more than enumerated): per-patient differences +1 (five), -1 (one), 0 (eight); |sum| >= 4
    needs at most one of the six signs to differ: exact p = 14/64. 4000 sampled patterns come within 0.03."""
    candidate, reference = (
        runs_from_hits(hits, patients=MONTE_CARLO_PATIENTS) for hits in (MONTE_CARLO_A, MONTE_CARLO_B)
    )
    p = paired_permutation_p(candidate, reference, "accuracy", permutations=4000, seed=seed)
    assert p == pytest.approx(14 / 64, abs=0.03)
    assert p == paired_permutation_p(
        candidate, reference, "accuracy", permutations=4000, seed=seed
    )  # the seed fixes the draws


def test_monte_carlo_p_depends_on_the_seed_only_through_the_sampled_patterns():
    candidate, reference = (
        runs_from_hits(hits, patients=MONTE_CARLO_PATIENTS) for hits in (MONTE_CARLO_A, MONTE_CARLO_B)
    )
    values = [paired_permutation_p(candidate, reference, "accuracy", permutations=500, seed=s) for s in range(6)]
    assert len(set(values)) > 1 and all(abs(v - 14 / 64) < 0.06 for v in values)
    assert all(v == (round(v * 501) / 501) for v in values)  # (extreme + 1) / (permutations + 1)


def test_monte_carlo_p_of_an_effect_no_permutation_reaches_is_one_over_permutations_plus_one():
    reference = runs_from_hits(np.zeros((2, 40)))
    better = runs_from_hits(np.ones((2, 40)))
    p_values = {paired_permutation_p(better, reference, "accuracy", permutations=999, seed=s) for s in range(3)}
    assert p_values == {1 / 1000}


def test_permutation_p_refuses_runs_that_are_not_paired():
    runs = runs_from_hits(np.ones((2, 6)))
    with pytest.raises(ValueError, match="paired runs must have the same seeds, scans and patients"):
        paired_permutation_p(runs, runs_from_hits(np.ones((1, 6))), "accuracy", permutations=10, seed=0)
    with pytest.raises(ValueError, match="paired runs"):
        other = runs_from_hits(np.ones((2, 6)), patients=np.arange(6) // 2)
        paired_permutation_p(runs, other, "accuracy", permutations=10, seed=0)


def test_holm_is_monotone_and_capped_at_one():
    assert holm([0.04, 0.01]) == pytest.approx([0.04, 0.02])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


def test_exact_p_counts_ties_of_a_large_statistic_despite_rounding():
    """Six patients of 10-60 scans, the candidate right on all three seeds and the reference on one: every
    per-patient difference is positive (2/3 per scan), so only all signs alike reach |sum| = 140: p = 2/64.
    Sums of thirds in the hundreds round differently pattern by pattern; the tie tolerance must grow with the
    statistic, or the observed pattern itself stops counting (p = 0)."""
    patients = np.repeat(np.arange(6), [10, 20, 30, 40, 50, 60])
    reference = np.zeros((3, len(patients)))
    reference[0] = 1
    p = paired_permutation_p(
        runs_from_hits(np.ones((3, len(patients))), patients),
        runs_from_hits(reference, patients),
        "accuracy",
        permutations=10,
        seed=0,
    )
    assert p == pytest.approx(2 / 64)
