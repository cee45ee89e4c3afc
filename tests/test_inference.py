import numpy as np
import pytest
from scipy.stats import nct, norm
from scipy.stats import t as student_t
from sklearn.metrics import roc_auc_score

from synthratio.inference import (
    Draws,
    Estimate,
    FixedSequence,
    Part,
    Runs,
    bootstrap,
    cluster_draws,
    estimate,
    fixed_sequence,
    holm,
    improvement,
    interval,
    model_part,
    non_inferiority,
    patient_part,
    per_seed,
    point,
    sequence_alpha,
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


def test_fixed_sequence_stops_at_the_first_r_not_shown():
    shown = fixed_sequence({25: "non-inferior", 50: "inferior", 75: "non-inferior", 100: "non-inferior"})
    assert (shown.shown, shown.stopped_at, shown.stop_verdict, shown.r_max) == (25, 50, "inferior", 25)
    unknown = fixed_sequence({25: "non-inferior", 50: "inconclusive", 100: "non-inferior"})
    assert (unknown.shown, unknown.r_max) == (25, None)  # no number where the data cannot tell
    assert fixed_sequence({50: "non-inferior", 25: "non-inferior"}).r_max == 50
    assert fixed_sequence({25: "inferior", 100: "non-inferior"}).r_max == 0


def test_holm_adjusts_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([]) == []


# --- each piece against an independent computation ---


def test_runs_refuse_shapes_that_do_not_pair_probs_labels_and_patients():
    for probs, labels, patients in [(np.zeros((2, 3, 2)), np.zeros(4, int), np.arange(4)),
                                    (np.zeros((2, 4, 2)), np.zeros(4, int), np.arange(3)),
                                    (np.zeros((4, 2)), np.zeros(4, int), np.arange(4))]:  # fmt: skip
        with pytest.raises(
            ValueError, match=r"expected \(models, scans, classes\) with one label and one patient per scan"
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


def test_holm_is_monotone_and_capped_at_one():
    assert holm([0.04, 0.01]) == pytest.approx([0.04, 0.02])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])


# --- the variance-components model behind every bound and p ---


def runs_of_accuracies(accuracies: list[float], scans: int = 10, generators: list[int] | None = None) -> Runs:
    """One run per model whose first accuracy * scans scans are right (one patient per scan)."""
    hits = np.arange(scans)[None, :] < np.round(np.array(accuracies) * scans)[:, None]
    runs = runs_from_hits(hits)
    return Runs(runs.probs, runs.labels, runs.patients, generators=None if generators is None else np.array(generators))


def test_runs_carry_one_generator_per_model_and_subsets_keep_them():
    runs = runs_of_accuracies([0.7, 0.8, 0.9], generators=[4, 4, 9])
    np.testing.assert_array_equal(runs.generator_groups, [4, 4, 9])
    np.testing.assert_array_equal(runs_of_accuracies([0.7, 0.8]).generator_groups, [0, 0])  # none: one generator
    first = runs.subset(np.arange(10) < 4)
    assert first.probs.shape == (3, 4, 2) and first.patients.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(first.generators, [4, 4, 9])
    with pytest.raises(ValueError, match="2 generator seeds for 3 models; expected one each"):
        Runs(runs.probs, runs.labels, runs.patients, generators=np.array([4, 9]))


def test_model_part_of_one_generator_is_the_seeds_spread_over_their_number():
    """Accuracies 0.80, 0.84, 0.82, 0.86, 0.78: squared deviations from 0.82 sum to 0.004, variance 0.001 on
    4 df, over 5 seeds 0.0002."""
    part = model_part(np.array([0.80, 0.84, 0.82, 0.86, 0.78]), np.zeros(5, dtype=int))
    assert part.variance == pytest.approx(0.0002) and part.df == 4


def test_model_part_of_several_generators_is_their_means_spread_over_their_number():
    """Three generators of two seeds: means 0.80, 0.84, 0.88, variance 0.0016 on 2 df, over 3: 0.000533.
    The same six numbers read as one generator's seeds: variance 0.00152 over 6 = 0.000253 on 5 df, half as
    much: the generator-to-generator spread is what a rerun of the recipe redraws."""
    values = np.array([0.79, 0.81, 0.83, 0.85, 0.90, 0.86])
    nested = model_part(values, np.repeat([7, 8, 9], 2))
    assert nested.variance == pytest.approx(0.0016 / 3) and nested.df == 2
    flat = model_part(values, np.zeros(6, dtype=int))
    assert flat.variance == pytest.approx(0.00152 / 6) and flat.df == 5
    # one seed per generator is enough: the generators are the units
    assert model_part(np.array([0.8, 0.9]), np.array([0, 1])) == Part(variance=pytest.approx(0.0025), df=1)
    # two generators of two seeds (the smallest nested design): means 0.80 and 0.88, 0.0032 over 2 on 1 df
    two = model_part(np.array([0.79, 0.81, 0.85, 0.91]), np.array([0, 0, 1, 1]))
    assert two == Part(variance=pytest.approx(0.0016), df=1)


@pytest.mark.parametrize("generators", [[0], [3]])
def test_model_part_refuses_a_single_model(generators: list[int]):
    with pytest.raises(ValueError, match=r"1 model\(s\) of one generator: a seed-to-seed variance needs >= 2 seeds"):
        model_part(np.array([0.8]), np.array(generators))


def test_patient_part_by_hand():
    """Differences 1, 1, 0, -1 of patients 0, 0, 1, 2: mean 0.25; the patients' summed deviations 1.5, -0.25,
    -1.25 square to 3.875; times C / (C - 1) = 3/2 over n^2 = 16: 0.36328125 on 2 df."""
    part = patient_part(np.array([1.0, 1.0, 0.0, -1.0]), np.array([0, 0, 1, 2]))
    assert part == Part(variance=pytest.approx(0.36328125), df=2)
    with pytest.raises(ValueError, match="the test scans come from one patient"):
        patient_part(np.array([1.0, 0.0]), np.array([5, 5]))
    # two patients are enough: deviations 0.5 and -0.5, 0.5 x 2/1 over 4 = 0.25 on 1 df
    assert patient_part(np.array([1.0, 0.0]), np.array([5, 6])) == Part(variance=pytest.approx(0.25), df=1)


def test_patient_part_of_one_scan_per_patient_is_the_variance_of_a_mean():
    difference = np.random.default_rng(12).normal(size=30)
    part = patient_part(difference, np.arange(30)[::-1])
    assert part.variance == pytest.approx(difference.var(ddof=1) / 30) and part.df == 29


def test_patient_part_counts_copies_of_a_patients_scan_once():
    """Five identical scans per patient carry the information of one: clustered by patient the variance is
    exactly that of one scan each; taken scan by scan (1000 clusters) it would be about five times smaller."""
    difference = np.random.default_rng(13).integers(-1, 2, 200).astype(float)
    one_each = patient_part(difference, np.arange(200))
    copies = np.repeat(difference, 5)
    by_patient = patient_part(copies, np.repeat(np.arange(200), 5))
    by_scan = patient_part(copies, np.arange(1000))
    assert by_patient.variance == pytest.approx(one_each.variance) and by_patient.df == 199
    assert by_patient.variance / by_scan.variance == pytest.approx(5 * (200 / 199) / (1000 / 999))


def test_estimate_df_is_satterthwaites_and_infinite_for_a_known_value():
    """Variances 0.0004 on 4 df, 0.0001 on 1, 0 on 2: (0.0005)^2 / (0.0004^2 / 4 + 0.0001^2 / 1) = 5 df; the
    zero part adds nothing. The t quantile on 5 df sets the interval."""
    mixed = Estimate(0.1, {"patients": Part(0.0004, 4), "candidate": Part(0.0001, 1), "reference": Part(0.0, 2)})
    assert mixed.se == pytest.approx(np.sqrt(0.0005)) and mixed.df == pytest.approx(5.0)
    assert mixed.quantile(0.975) == pytest.approx(2.5705818)
    half = 2.5705818 * np.sqrt(0.0005)
    assert mixed.interval(0.95) == pytest.approx((0.1 - half, 0.1 + half))
    assert Estimate(0.1, {"patients": Part(0.0004, 7)}).df == 7  # one part: its own df
    known = Estimate(0.1, {"patients": Part(0.0, 9), "candidate": Part(0.0, 1)})
    assert known.df == float("inf") and known.se == 0 and known.interval(0.95) == (0.1, 0.1)


def test_estimate_of_identical_runs_paired_is_zero_with_no_patient_variance():
    """The same predictions on both sides: no difference on any scan. The arms' seeds still count, each its
    own: a rerun redraws both arms' seeds independently."""
    runs = runs_from_hits(np.random.default_rng(14).random((4, 40)) < 0.8, patients=np.arange(40) // 2)
    difference = estimate(runs, "accuracy", reference=runs)
    seeds = model_part(per_seed(runs, "accuracy"), np.zeros(4, dtype=int))
    assert difference.value == 0 and difference.parts["patients"] == Part(0.0, 19)
    assert difference.parts["candidate"] == difference.parts["reference"] == seeds and seeds.variance > 0


def test_estimate_of_a_paired_accuracy_difference_by_hand():
    """Candidate seeds right on 3 and 4 of 4 scans, reference on 2 and 1: improvement 0.875 - 0.375 = 0.5;
    each arm's seeds differ by 0.25: variance 0.03125 / 2 on 1 df. Per-scan difference of the seed means
    0.5, 1, 0, 0.5 over patients 0, 0, 1, 2: patient variance 0.046875 on 2 df."""
    patients = np.array([0, 0, 1, 2])
    candidate = runs_from_hits(np.array([[1, 1, 1, 0], [1, 1, 1, 1]]), patients)
    reference = runs_from_hits(np.array([[1, 0, 1, 0], [0, 0, 1, 0]]), patients)
    difference = estimate(candidate, "accuracy", reference=reference)
    assert difference.value == pytest.approx(0.5)
    assert difference.parts == {
        "candidate": Part(pytest.approx(0.015625), 1),
        "reference": Part(pytest.approx(0.015625), 1),
        "patients": Part(pytest.approx(0.046875), 2),
    }
    total = 2 * 0.015625 + 0.046875
    assert difference.se == pytest.approx(np.sqrt(total))
    assert difference.df == pytest.approx(total**2 / (2 * 0.015625**2 + 0.046875**2 / 2))
    with pytest.raises(ValueError, match="paired arms must have scored the same test scans of the same patients"):
        estimate(candidate, "accuracy", reference=runs_from_hits(np.ones((2, 4)), np.array([0, 1, 1, 2])))


def test_estimate_of_one_arm_is_its_metric_with_its_seeds_and_patients():
    runs = runs_from_hits(np.array([[1, 1, 1, 0], [1, 1, 1, 1]]), np.array([0, 0, 1, 2]))
    alone = estimate(runs, "log_loss")
    assert alone.value == pytest.approx(point(runs, "log_loss")) and set(alone.parts) == {"candidate", "patients"}
    # per-scan losses averaged over the seeds: -log 0.9 on three scans, -(log 0.9 + log 0.1) / 2 on the last
    per_scan = -np.log([0.9, 0.9, 0.9, np.sqrt(0.09)])
    assert alone.parts["patients"] == patient_part(per_scan, np.array([0, 0, 1, 2]))


def test_estimate_of_a_lower_log_loss_is_a_positive_improvement():
    patients = np.arange(6)
    better = runs_from_hits(np.ones((2, 6)), patients)
    worse = runs_from_hits(np.ones((2, 6)), patients, confident=0.6)
    assert estimate(better, "log_loss", reference=worse).value == pytest.approx(np.log(0.9) - np.log(0.6))


def test_a_candidates_generators_count_their_spread():
    """Six models, two per generator, generator means 0.75, 0.85, 0.95: read as three generators the
    candidate's variance is their spread over 3 (0.01 / 3 on 2 df); the same models read as one generator's
    six seeds give 0.011 / 6 on 5 df. Only the candidate part changes."""
    accuracies = [0.7, 0.8, 0.8, 0.9, 1.0, 0.9]
    reference = runs_of_accuracies([0.8, 0.9])
    nested = estimate(runs_of_accuracies(accuracies, generators=[0, 0, 1, 1, 2, 2]), "accuracy", reference=reference)
    flat = estimate(runs_of_accuracies(accuracies), "accuracy", reference=reference)
    assert nested.parts["candidate"] == Part(pytest.approx(0.01 / 3), 2)
    assert flat.parts["candidate"] == Part(pytest.approx(0.011 / 6), 5)
    assert nested.value == flat.value == pytest.approx(0.0)
    assert nested.parts["patients"] == flat.parts["patients"] and nested.parts["reference"] == flat.parts["reference"]
    assert nested.se > flat.se and nested.df < flat.df


def auroc_runs(seed: int, noise: float) -> Runs:
    labels = np.tile([0, 1], 20)
    p0 = (np.where(labels == 0, 0.7, 0.3)[None] + np.random.default_rng(seed).normal(0, noise, (2, 40))).clip(0, 1)
    return Runs(probs=np.stack([p0, 1 - p0], axis=2), labels=labels, patients=np.arange(40) // 2)


def test_auroc_needs_patient_draws_and_its_patient_variance_is_theirs_with_models_fixed():
    candidate, reference = auroc_runs(15, 0.2), auroc_runs(16, 0.3)
    with pytest.raises(ValueError, match="AUROC's patient variance comes from a patient bootstrap: pass draws"):
        estimate(candidate, "auroc", reference=reference)
    draws = cluster_draws(candidate.patients, n_seeds=1, resamples=50, seed=0, strata=candidate.labels)
    difference = estimate(candidate, "auroc", reference=reference, draws=draws)
    positive = candidate.labels == 0
    expected = [
        np.mean([roc_auc_score(positive, s, sample_weight=w) for s in candidate.probs[..., 0]])
        - np.mean([roc_auc_score(positive, s, sample_weight=w) for s in reference.probs[..., 0]])
        for w in draws.weights
    ]  # every model on each draw's patients, the same models every draw
    assert difference.parts["patients"] == Part(pytest.approx(np.var(expected, ddof=1)), 19)
    assert difference.parts["patients"].variance > 0
    assert difference.value == pytest.approx(point(candidate, "auroc") - point(reference, "auroc"))
    same = estimate(candidate, "auroc", reference=candidate, draws=draws)
    assert same.value == 0 and same.parts["patients"].variance == 0


def verdict_of(delta: float, *, se: float = 0.01, df: float = 10, margin: float = 0.02, alpha: float = 0.025):
    return non_inferiority(Estimate(delta, {"patients": Part(se**2, df)}), margin=margin, alpha=alpha)


@pytest.mark.parametrize(("df", "alpha"), [(1, 0.025), (4, 0.0125), (30, 0.05), (np.inf, 0.025)])
def test_non_inferior_exactly_where_p_noninferior_crosses_alpha(df: float, alpha: float):
    """The lower bound clears -margin at delta = -margin + t(1 - alpha, df) * se; just above it the verdict is
    non-inferior and p_noninferior < alpha, just below neither. Upper and lower bounds sit t * se either side."""
    critical = student_t.ppf(1 - alpha, df)
    boundary = -0.02 + critical * 0.01
    above, below = verdict_of(boundary + 1e-9, df=df, alpha=alpha), verdict_of(boundary - 1e-9, df=df, alpha=alpha)
    assert (above.verdict, below.verdict) == ("non-inferior", "inconclusive")
    assert above.p_noninferior < alpha < below.p_noninferior
    assert above.p_noninferior == pytest.approx(alpha)
    for result in (above, below):
        assert result.delta - result.lower == pytest.approx(critical * 0.01)
        assert result.upper - result.delta == pytest.approx(critical * 0.01)
        assert (result.se, result.df) == (pytest.approx(0.01), pytest.approx(df))
    for delta in np.linspace(-0.06, 0.04, 41):  # the verdict and p never disagree
        result = verdict_of(delta, df=df, alpha=alpha)
        assert (result.verdict == "non-inferior") == (result.p_noninferior < alpha)


def test_inferior_is_an_upper_bound_below_minus_margin():
    """On 10 df at alpha 0.025, t = 2.228: the upper bound is below -0.02 for delta < -0.0423."""
    boundary = -0.02 - student_t.ppf(0.975, 10) * 0.01
    assert verdict_of(boundary - 1e-9).verdict == "inferior"
    assert verdict_of(boundary + 1e-9).verdict == "inconclusive"
    assert verdict_of(0.0).verdict == "inconclusive"  # bounds +-0.0223 straddle -0.02
    assert verdict_of(0.0, se=0.005).verdict == "non-inferior"


def test_two_sided_p_agrees_with_the_bounds():
    """p < 2 alpha exactly when the one-sided bounds, a two-sided 1 - 2 alpha interval, leave out 0."""
    assert verdict_of(0.0).p == 1.0
    assert verdict_of(0.013).p == pytest.approx(verdict_of(-0.013).p)
    assert verdict_of(0.013).p == pytest.approx(2 * student_t.sf(1.3, 10))
    for delta in np.linspace(-0.05, 0.05, 51):
        result = verdict_of(delta)
        assert (result.p < 0.05) == (result.lower > 0 or result.upper < 0)


def test_power_is_alpha_at_margin_zero_and_rises_with_the_margin():
    """Power: the chance that a candidate with no real cost is shown non-inferior. At margin 0 that is the
    test's level; it rises with the margin and falls as the standard error grows."""
    for df in (1, 4, np.inf):
        assert verdict_of(0.0, df=df, margin=1e-12).power == pytest.approx(0.025)
    powers = [verdict_of(0.0, margin=m).power for m in (0.005, 0.01, 0.02, 0.04, 0.08)]
    assert powers == sorted(powers) and powers[0] > 0.025 and powers[-1] > 0.99
    assert verdict_of(0.0, se=0.02).power < verdict_of(0.0, se=0.01).power
    critical = student_t.ppf(0.975, 10)
    assert verdict_of(0.0).power == pytest.approx(nct.sf(critical, 10, 2.0))  # noncentrality margin / se
    assert verdict_of(0.0, df=np.inf).power == pytest.approx(norm.sf(norm.ppf(0.975) - 2.0))
    assert verdict_of(-0.5).power == verdict_of(0.0).power  # about the design, not the observed difference


@pytest.mark.parametrize("df", [1, 2, 30, np.inf])
def test_margin_at_power_is_cleared_with_the_target_power(df: float):
    """With a true difference of 0, the margin_at_power is shown non-inferior 80% of the time on any df (the
    noncentral t solved for it; the sum of quantiles is exact on a normal only, and on 1 df gives 0.73)."""
    result = verdict_of(0.0, df=df)
    assert verdict_of(0.0, df=df, margin=result.margin_at_power).power == pytest.approx(0.8, abs=1e-6)
    normal = (student_t.ppf(0.975, df) + student_t.ppf(0.8, df)) * 0.01
    assert result.margin_at_power == pytest.approx(normal, rel=1e-6 if df == np.inf else 0.01 if df > 10 else 0.5)


@pytest.mark.parametrize(("df", "alpha"), [(1, 0.001), (1, 0.45), (np.inf, 0.45)])
def test_margin_at_power_is_found_at_any_level(df: float, alpha: float):
    """A small alpha on 1 df puts the margin far beyond the critical value (heavy tails); a large alpha puts it
    below one standard error. Either way it is the margin with 80% power."""
    result = verdict_of(0.0, df=df, alpha=alpha)
    assert verdict_of(0.0, df=df, alpha=alpha, margin=result.margin_at_power).power == pytest.approx(0.8, abs=1e-6)


def test_a_known_difference_is_judged_by_its_value():
    """Every model scored every scan alike (no variance): the bounds are the difference itself; a bound
    exactly at -margin shows nothing either way."""
    at_margin = non_inferiority(Estimate(-0.02, {"patients": Part(0.0, 9)}), margin=0.02, alpha=0.025)
    assert (at_margin.lower, at_margin.upper, at_margin.verdict) == (-0.02, -0.02, "inconclusive")
    assert (at_margin.p_noninferior, at_margin.p, at_margin.power, at_margin.se) == (1.0, 0.0, 1.0, 0.0)
    none = non_inferiority(Estimate(0.0, {"patients": Part(0.0, 9)}), margin=0.02, alpha=0.025)
    assert (none.verdict, none.p_noninferior, none.p, none.margin_at_power) == ("non-inferior", 0.0, 1.0, 0.0)
    worse = non_inferiority(Estimate(-0.03, {"patients": Part(0.0, 9)}), margin=0.02, alpha=0.025)
    assert worse.verdict == "inferior"


def test_sequence_alpha_splits_the_level_over_the_regimes():
    assert sequence_alpha(0.025, 1) == 0.025 and sequence_alpha(0.025, 2) == 0.0125
    assert sequence_alpha(0.05, 4) == pytest.approx(0.0125)
    with pytest.raises(ValueError, match="families=0; at least one sequence shares alpha"):
        sequence_alpha(0.025, 0)


def test_fixed_sequence_of_nothing_and_of_every_r_shown():
    assert fixed_sequence({}) == FixedSequence(shown=0, stopped_at=None, stop_verdict=None)
    assert fixed_sequence({25: "non-inferior", 50: "non-inferior"}).r_max == 50
