from pathlib import Path

import numpy as np
import pytest
import yaml

from synthratio.classify.experiment import check_run
from synthratio.classify.mixing import BatchPlan, RatioBatchSampler, _Walk, plan_batches
from synthratio.config import ParamsError, params_from_dict

# 0 = CNV (the synthetic class), 1 = NORMAL, 2 = DME: imbalanced 50 / 30 / 7
LABELS = np.repeat([0, 1, 2], [50, 30, 7])
NUM_SYNTHETIC = 13
KEPT = np.concatenate([np.arange(5), np.arange(50, 87)])  # a cohort: 5 real CNV of the 50, all NORMAL and DME


def sampler_for(
    labels: np.ndarray = LABELS,
    *,
    num_synthetic: int = NUM_SYNTHETIC,
    seed: int = 0,
    synthetic_label: int = 0,
    **kwargs,
) -> RatioBatchSampler:
    """A sampler over `labels` with `num_synthetic` synthetic examples of one class, CNV (0) by default."""
    return RatioBatchSampler(
        labels,
        synthetic_labels=np.full(num_synthetic, synthetic_label),
        synthetic_classes=[synthetic_label],
        seed=seed,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("labels", "batch_size", "ratio", "expected"),
    [
        (LABELS, 8, 25, BatchPlan((4, 3, 1), (1, 0, 0))),  # quotas 4.60, 2.76, 0.64: .76 and .64 get the spares
        (LABELS, 32, 50, BatchPlan((18, 11, 3), (9, 0, 0))),  # 18.39, 11.03, 2.57
        (LABELS, 33, 100, BatchPlan((19, 11, 3), (19, 0, 0))),  # 18.97, 11.38, 2.66
        (np.repeat([0, 1], [99, 1]), 4, 10, BatchPlan((3, 1), (0, 0))),  # the rare class still gets one
        (np.repeat([0, 1], [10, 10]), 10, 10, BatchPlan((5, 5), (1, 0))),  # 10% of 5 = 0.5 rounds up, exactly
    ],
)
def test_plan(labels: np.ndarray, batch_size: int, ratio: int, expected: BatchPlan):
    assert plan_batches(labels, batch_size=batch_size, synthetic_labels=[0], ratio=ratio) == expected


@pytest.mark.parametrize(
    ("mode", "batch_size", "ratio", "expected"),
    [
        ("add", 8, 25, BatchPlan((5, 3, 1), (1, 0, 0))),  # the R=0 batch (4, 3, 1) plus round(25% of 4) synthetic CNV
        ("add", 32, 50, BatchPlan((27, 11, 3), (9, 0, 0))),
        ("add", 33, 100, BatchPlan((38, 11, 3), (19, 0, 0))),  # 19 real CNV and 19 synthetic on top
        ("add", 32, 250, BatchPlan((63, 11, 3), (45, 0, 0))),  # above 100: 2.5 synthetic per real CNV slot
        (
            "replace",
            8,
            50,
            BatchPlan((5, 2, 1), (3, 0, 0)),
        ),  # 2.5 rounds up; make-up of the full set (counts 60/30/7), not of LABELS
    ],
)
def test_plan_add_mode_and_class_counts(mode: str, batch_size: int, ratio: int, expected: BatchPlan):
    counts = [60, 30, 7] if mode == "replace" else None
    plan = plan_batches(
        LABELS, batch_size=batch_size, synthetic_labels=[0], ratio=ratio, mode=mode, class_counts=counts
    )
    assert plan == expected


@pytest.mark.parametrize("batch_size", [8, 32, 33])
@pytest.mark.parametrize("ratio", [0, 25, 50, 100])
@pytest.mark.parametrize("mode", ["replace", "add"])
def test_every_batch_has_the_planned_composition(batch_size: int, ratio: int, mode: str):
    """Counts real and synthetic CNV in every batch against the definition of each mode."""
    # R=0: the real make-up both modes start from
    real_plan = plan_batches(LABELS, batch_size=batch_size, synthetic_labels=[0], ratio=0)
    cnv_slots = real_plan.per_class[0]
    expected_synthetic = (ratio * cnv_slots + 50) // 100
    expected_real_cnv = cnv_slots - expected_synthetic if mode == "replace" else cnv_slots
    sampler = sampler_for(ratio=ratio, batch_size=batch_size, steps=20, mode=mode)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 20
    for batch in batches:
        real = batch[batch < len(LABELS)]
        assert (batch >= len(LABELS)).sum() == expected_synthetic
        assert (LABELS[real] == 0).sum() == expected_real_cnv
        assert np.bincount(LABELS[real], minlength=3)[1:].tolist() == list(real_plan.per_class[1:])
        assert len(batch) == batch_size + (expected_synthetic if mode == "add" else 0)
    if ratio == 100 and mode == "replace":
        assert all((LABELS[b[b < len(LABELS)]] != 0).all() for b in batches)  # no real CNV at all


def test_a_subsample_keeps_the_full_make_up():
    """Scarce regime: 5 real CNV left of 50; batches still hold the full set's 4 CNV slots, from those 5."""
    sampler = sampler_for(LABELS[KEPT], ratio=25, batch_size=8, steps=10, class_counts=np.bincount(LABELS))
    assert sampler.plan == plan_batches(LABELS, batch_size=8, synthetic_labels=[0], ratio=25)
    drawn = np.concatenate([b[b < len(KEPT)] for b in sampler])
    assert set(drawn[LABELS[KEPT][drawn] == 0]) == set(range(5))


def test_each_pool_is_walked_without_replacement_per_pass():
    """Real CNV (indices 0..49, 3 per batch of 8 at R=25) repeats only after all 50 have been drawn."""
    sampler = sampler_for(ratio=25, batch_size=8, steps=25, seed=1)
    drawn = np.concatenate([b[b < 50] for b in sampler])
    assert len(drawn) == 75
    assert sorted(drawn[:50]) == list(range(50))
    synthetic = np.concatenate([b[b >= len(LABELS)] for b in sampler]) - len(LABELS)
    assert sorted(synthetic[:NUM_SYNTHETIC]) == list(range(NUM_SYNTHETIC))


def test_deterministic_for_a_seed():
    def batches(seed: int) -> list[list[int]]:
        return [b.tolist() for b in sampler_for(ratio=50, batch_size=16, steps=10, seed=seed)]

    assert batches(3) == batches(3)
    assert batches(3) != batches(4)


def test_ratio_zero_needs_no_synthetic():
    assert all((b < len(LABELS)).all() for b in sampler_for(num_synthetic=0, ratio=0, batch_size=8, steps=5))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_synthetic": 0, "ratio": 50}, r"ratio=50 needs synthetic examples of class 0, got none"),
        ({"ratio": 101}, r"ratio=101; expected a percent in 0..100 for mode 'replace'"),
        ({"ratio": 1001, "mode": "add"}, r"ratio=1001; expected a percent in 0..1000 for mode 'add'"),
        ({"mode": "mix"}, r"mode='mix'; expected one of \['replace', 'add', 'data'\]"),
        ({"class_counts": [60, 30]}, r"class_counts=\[60, 30\] must cover every class"),
        ({"batch_size": 2}, r"batch_size=2; .* needs >= 3"),
        ({"synthetic_label": 3}, r"synthetic classes \[3\]; expected distinct classes of labels, 0..2"),
        ({"labels": np.repeat([0, 2], [5, 5])}, r"class counts \[5, 0, 5\]"),
    ],
)
def test_bad_arguments_raise_naming_the_values(kwargs: dict, message: str):
    args = {"labels": LABELS, "ratio": 50, "batch_size": 8, "steps": 1}
    with pytest.raises(ValueError, match=message):
        sampler_for(**{**args, **kwargs})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mix": {"mode": "blend"}}, r"mix.mode='blend'; expected one of \['add', 'data', 'replace'\]"),
        (
            {"sweep": {"ratios": [50, 200]}},
            r"sweep.ratios=\[50, 200\]; expected percents in 1..100 with mix.mode replace",
        ),
        (
            {"sweep": {"keep": [100, 0]}},
            r"sweep.keep=\[100, 0\]; expected one or more distinct integer percents in 1..100",
        ),
        (
            {"sweep": {"ratios": [1001]}, "mix": {"mode": "add"}},
            r"sweep.ratios=\[1001\]; expected integer percents in 1..100 \(mix.mode add: 1..1000",
        ),
    ],
)
def test_params_check_mix_mode_ratios_and_keep(changes: dict, message: str):
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    for section, values in changes.items():
        raw[section] = {**raw[section], **values}
    with pytest.raises(ParamsError, match=message):
        params_from_dict(raw)
    if changes.get("mix", {}).get("mode") == "add" and changes["sweep"]["ratios"] == [1001]:
        raw["sweep"]["ratios"] = [150]
        assert params_from_dict(raw).sweep.ratios == (150,)  # add mode allows R above 100


@pytest.mark.parametrize(
    ("mode", "ratio", "keep", "message"),
    [
        ("replace", 101, 100, r"--ratio 101; expected a percent in 0..100 for mix.mode 'replace'"),
        ("add", 1001, 100, r"--ratio 1001; expected a percent in 0..1000 for mix.mode 'add'"),
        ("replace", -5, 100, r"--ratio -5"),
        ("replace", 50, 0, r"--keep 0; expected a percent of patients in 1..100"),
        ("replace", 50, 101, r"--keep 101"),
    ],
)
def test_stage_arguments_outside_the_sweep_are_refused(mode: str, ratio: int, keep: int, message: str):
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params = params_from_dict({**raw, "mix": {**raw["mix"], "mode": mode}})
    with pytest.raises(ParamsError, match=message):
        check_run(params, ratio, keep)
    check_run(params, 0 if mode == "replace" else 150, 25)  # inside both ranges: no error


def test_data_mode_pools_left_out_fill_with_the_kept_real_scans():
    """Cohort of 5 real CNV (of the full set's 50) plus 45 synthetic in their place: the CNV slots draw from
    one pool of 50, so about 90% of them are synthetic, every kept real scan is seen, class make-up fixed."""
    sampler = sampler_for(
        LABELS[KEPT],
        num_synthetic=45,
        ratio=100,
        batch_size=8,
        steps=200,
        mode="data",
        class_counts=np.bincount(LABELS),
    )
    assert sampler.synthetic_share == pytest.approx(0.9)
    batches = list(sampler)
    n = len(KEPT)
    cnv = np.concatenate([b[(b >= n) | (LABELS[KEPT][np.minimum(b, n - 1)] == 0)] for b in batches])
    assert len(cnv) == 200 * sampler.plan.per_class[0]
    assert (cnv >= n).mean() == pytest.approx(0.9, abs=0.02)
    assert set(cnv[cnv < n]) == set(range(5)) and set(cnv[cnv >= n] - n) == set(range(45))


def test_data_mode_with_nothing_to_fill_draws_the_baseline_batches():
    baseline = [b.tolist() for b in sampler_for(num_synthetic=0, ratio=0, batch_size=8, steps=12)]
    data = [b.tolist() for b in sampler_for(num_synthetic=0, ratio=100, batch_size=8, steps=12, mode="data")]
    assert data == baseline


@pytest.mark.parametrize(("ratio", "share"), [(25, 3 / 11), (50, 6 / 11), (75, 8 / 11), (100, 1.0)])
def test_synthetic_share_is_what_the_batches_hold_not_the_nominal_r(ratio: int, share: float):
    """11 CNV slots per batch of 20: R=25/50/75 round to 3, 6 (5.5 rounds up) and 8 synthetic."""
    labels = np.repeat([0, 1], [55, 45])
    sampler = sampler_for(labels, ratio=ratio, batch_size=20, steps=3)
    assert sampler.plan.per_class[0] == 11
    assert sampler.synthetic_share == pytest.approx(share)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros((2, 3), int), r"shape \(2, 3\)"),
        (np.array([], int), r"shape \(0,\)"),
        (np.array([0, -1, 1]), r"shape \(3,\)"),
    ],
)
def test_labels_must_be_a_non_empty_vector_of_class_indices(labels: np.ndarray, message: str):
    with pytest.raises(
        ValueError, match=r"labels: expected a non-empty 1-D array of class indices >= 0, got " + message
    ):
        plan_batches(labels, batch_size=8, synthetic_labels=[0], ratio=50)


def test_class_counts_below_the_labels_own_counts_are_refused():
    with pytest.raises(
        ValueError, match=r"class_counts=\[40, 30, 7\] must cover every class of labels, at least as often"
    ):
        # 50 CNV labels, counts say 40
        plan_batches(LABELS, batch_size=8, synthetic_labels=[0], ratio=50, class_counts=[40, 30, 7])
    own = plan_batches(LABELS, batch_size=8, synthetic_labels=[0], ratio=50)
    assert plan_batches(LABELS, batch_size=8, synthetic_labels=[0], ratio=50, class_counts=[50, 30, 7]) == own


def test_several_rare_classes_each_take_one_slot_from_the_largest():
    """Counts 97/1/1/1 in batches of 4: quotas 3.88 and 0.04 x 3; the three rare classes get one slot each."""
    plan = plan_batches(np.repeat([0, 1, 2, 3], [97, 1, 1, 1]), batch_size=4, synthetic_labels=[0], ratio=0)
    assert plan == BatchPlan((1, 1, 1, 1), (0, 0, 0, 0))
    # NORMAL takes the spare slot (remainder .88 over .08 and .04), then CNV and DME one each from it
    plan = plan_batches(np.repeat([0, 1, 2], [1, 97, 2]), batch_size=4, synthetic_labels=[0], ratio=100)
    assert plan == BatchPlan((1, 2, 1), (1, 0, 0))


def test_data_mode_fixes_no_synthetic_slots_and_add_mode_share_counts_the_added_ones():
    assert plan_batches(LABELS, batch_size=8, synthetic_labels=[0], ratio=100, mode="data") == BatchPlan(
        (4, 3, 1), (0, 0, 0)
    )
    labels = np.repeat([0, 1], [55, 45])
    add = sampler_for(labels, ratio=50, batch_size=20, steps=2, mode="add")
    assert add.plan == BatchPlan((17, 9), (6, 0)) and add.synthetic_share == pytest.approx(
        6 / 17
    )  # 11 real + 6 synthetic slots


def test_a_pool_smaller_than_its_slots_is_walked_several_times_in_one_batch():
    """Two real CNV left (of six) for four CNV slots per batch: each batch holds both, twice."""
    labels = np.repeat([0, 1], [2, 6])
    sampler = sampler_for(labels, num_synthetic=0, ratio=0, batch_size=8, steps=3, class_counts=[6, 6])
    for batch in sampler:
        assert sorted(batch[labels[batch] == 0].tolist()) == [0, 0, 1, 1] and (labels[batch] == 1).sum() == 4


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # 3 CNV, 3 NORMAL, 1 DME, 1 synthetic CNV
        ({"ratio": 25, "seed": 5}, [[29, 6, 39, 57, 69, 78, 80, 94], [48, 17, 30, 76, 64, 51, 83, 97]]),
        # 4 CNV, 3 NORMAL, 1 DME, then 2 synthetic NORMAL on top
        (
            {"ratio": 50, "seed": 5, "mode": "add", "synthetic_label": 1},
            [[29, 6, 39, 48, 57, 69, 78, 80, 94, 97], [17, 30, 32, 26, 76, 64, 51, 83, 88, 91]],
        ),
        # 4 CNV from one pool of the cohort's 5 real (0..4) and 45 synthetic (42..86), then 3 NORMAL, 1 DME
        (
            {"labels": LABELS[KEPT], "num_synthetic": 45, "ratio": 100, "seed": 0, "mode": "data"},
            [[55, 60, 73, 4, 10, 33, 12, 41], [2, 3, 71, 61, 21, 19, 6, 37]],
        ),
    ],
)
def test_batches_are_pinned_for_a_seed(kwargs: dict, expected: list[list[int]]):
    """Seeded checks against fixed numbers, drawn before there could be several synthetic classes: a change in
    how pools are walked changes the batches, and one class's results have not moved."""
    batches = sampler_for(**{"batch_size": 8, "steps": 2, "class_counts": [50, 30, 7], **kwargs})
    assert [b.tolist() for b in batches] == expected


def test_class_counts_naming_a_class_without_real_examples_are_refused():
    """class_counts promise DME (7 scans) but the labels hold none: its slots could never be filled, so the
    error names the real counts (not a numpy shape error, and no sampler that waits forever for DME)."""
    labels = np.repeat([0, 1], [50, 30])
    with pytest.raises(
        ValueError, match=r"real training class counts \[50, 30, 0\]: every class needs at least one example"
    ):
        plan_batches(labels, batch_size=8, synthetic_labels=[0], ratio=50, class_counts=[50, 30, 7])


def test_equal_remainders_give_the_spare_slot_to_the_first_class_on_every_machine():
    """Counts 1:1:2:2 in batches of 7: quotas 1.17, 1.17, 2.33, 2.33; the one spare slot goes to class 2, the
    first of the two tied ones. A sort that is not stable (numpy's default, SIMD on some CPUs) may hand it to
    class 3, and the batch make-up, hence the results, would depend on the machine."""
    plan = plan_batches(np.repeat([0, 1, 2, 3], [100, 100, 200, 200]), batch_size=7, synthetic_labels=[0], ratio=0)
    assert plan == BatchPlan((1, 1, 3, 2), (0, 0, 0, 0))


@pytest.mark.parametrize(("ratio", "synthetic"), [(49, 0), (50, 1), (51, 1)])
def test_synthetic_count_rounds_half_up_and_below_half_down(ratio: int, synthetic: int):
    """One CNV slot per batch: R=49 is 0.49 of a slot (no synthetic example), R=50 exactly half (rounds up)."""
    plan = plan_batches(np.repeat([0, 1], [10, 10]), batch_size=2, synthetic_labels=[0], ratio=ratio)
    assert plan.synthetic == (synthetic, 0)


def test_any_positive_ratio_needs_synthetic_examples():
    """R=1 rounds to no synthetic slot in a small batch, yet a run labelled R=1 without synthetic examples is
    a mistake in the caller: refused like any other R > 0."""
    with pytest.raises(ValueError, match=r"ratio=1 needs synthetic examples of class 0, got none"):
        sampler_for(num_synthetic=0, ratio=1, batch_size=8, steps=1)


def test_class_counts_given_as_floats_plan_the_same_batches():
    """Counts that arrive as floats (a JSON or CSV column pandas read as float64) are whole numbers of scans:
    the same plan as the integer counts, not a failure in the largest-remainder step."""
    floats = np.array([60.0, 30.0, 7.0])
    whole = plan_batches(LABELS, batch_size=8, synthetic_labels=[0], ratio=50, class_counts=[60, 30, 7])
    assert plan_batches(LABELS, batch_size=8, synthetic_labels=[0], ratio=50, class_counts=floats) == whole


@pytest.mark.parametrize(
    ("classes", "mode", "batch_size", "ratio", "expected"),
    [
        ([0, 1], "replace", 8, 50, BatchPlan((4, 3, 1), (2, 2, 0))),  # 50% of 4 CNV and of 3 NORMAL (1.5 rounds up)
        ([1, 0], "replace", 8, 50, BatchPlan((4, 3, 1), (2, 2, 0))),  # the order of the classes plans nothing
        ([0, 1], "replace", 8, 25, BatchPlan((4, 3, 1), (1, 1, 0))),  # 1, and 0.75 rounds to 1
        ([0, 2], "replace", 32, 50, BatchPlan((18, 11, 3), (9, 0, 2))),  # 9, and 1.5 of DME's 3 slots
        ([0, 1], "add", 8, 50, BatchPlan((6, 5, 1), (2, 2, 0))),  # on top of the R=0 batch (4, 3, 1)
        ([0, 1, 2], "add", 32, 100, BatchPlan((36, 22, 6), (18, 11, 3))),
        ([0, 2], "data", 8, 100, BatchPlan((4, 3, 1), (0, 0, 0))),
        ([], "replace", 8, 0, BatchPlan((4, 3, 1), (0, 0, 0))),  # no synthetic class: a plain classifier
    ],
)
def test_plan_several_synthetic_classes_each_at_r_of_their_own_slots(
    classes: list[int], mode: str, batch_size: int, ratio: int, expected: BatchPlan
):
    assert plan_batches(LABELS, batch_size=batch_size, synthetic_labels=classes, ratio=ratio, mode=mode) == expected


@pytest.mark.parametrize(("mode", "ratio"), [("replace", 25), ("replace", 50), ("replace", 100), ("add", 50)])
def test_every_batch_holds_each_synthetic_class_its_synthetic_examples(mode: str, ratio: int):
    """Synthetic CNV and DME interleaved: each class's synthetic slots take its own synthetic examples, and
    its real slots what is left of the R=0 make-up (replace) or all of it (add)."""
    synthetic_labels = np.array([2, 0] * 5 + [0] * 3)
    sampler = RatioBatchSampler(
        LABELS,
        synthetic_labels=synthetic_labels,
        synthetic_classes=[0, 2],
        ratio=ratio,
        batch_size=32,
        steps=20,
        seed=0,
        mode=mode,
    )
    slots = np.array(plan_batches(LABELS, batch_size=32, synthetic_labels=[0], ratio=0).per_class)  # (18, 11, 3)
    expected = np.where([True, False, True], (ratio * slots + 50) // 100, 0)
    assert sampler.plan.synthetic == tuple(expected)
    for batch in sampler:
        synthetic = np.bincount(synthetic_labels[batch[batch >= len(LABELS)] - len(LABELS)], minlength=3)
        real = np.bincount(LABELS[batch[batch < len(LABELS)]], minlength=3)
        assert synthetic.tolist() == expected.tolist()
        assert real.tolist() == (slots - expected if mode == "replace" else slots).tolist()


@pytest.mark.parametrize(
    ("classes", "counts"),
    [
        ([1], [4, 3, 1, 2]),  # the R=0 batch (4, 3, 1), then round(50% of 3) synthetic NORMAL
        ([2, 0], [4, 3, 1, 1, 2]),  # then 1 synthetic DME (0.5 rounds up), then 2 synthetic CNV
    ],
)
def test_one_generator_walks_the_real_pools_by_class_then_the_synthetic_ones_in_the_order_given(
    classes: list[int], counts: list[int]
):
    """The draws, not just the counts: with one synthetic class, those of the sampler before there could be
    several (its results do not move); with more, their pools follow the order of synthetic_classes."""
    synthetic_labels = np.resize(classes, 20)
    sampler = RatioBatchSampler(
        LABELS,
        synthetic_labels=synthetic_labels,
        synthetic_classes=classes,
        ratio=50,
        batch_size=8,
        steps=30,
        seed=3,
        mode="add",
    )
    rng = np.random.default_rng(3)
    real = [np.flatnonzero(LABELS == c) for c in range(3)]
    synthetic = [len(LABELS) + np.flatnonzero(synthetic_labels == c) for c in classes]
    walks = [_Walk(pool, rng) for pool in [*real, *synthetic]]
    expected = [np.concatenate([walk.take(n) for walk, n in zip(walks, counts)]).tolist() for _ in range(30)]
    assert [b.tolist() for b in sampler] == expected


def test_data_mode_pools_each_synthetic_class_with_its_own_real_examples():
    """Cohort of 5 real CNV and 2 real DME (of 50 and 7) with 45 synthetic CNV and 5 synthetic DME in their
    place: every batch keeps the make-up, each class's slots draw from its own pool of real and synthetic."""
    kept = np.concatenate([np.arange(5), np.arange(50, 82)])
    labels = LABELS[kept]
    synthetic_labels = np.repeat([2, 0], [5, 45])
    sampler = RatioBatchSampler(
        labels,
        synthetic_labels=synthetic_labels,
        synthetic_classes=[0, 2],
        ratio=100,
        batch_size=8,
        steps=350,  # 1,400 CNV draws: 28 passes of its pool of 50; 350 DME draws: 50 of its pool of 7
        seed=0,
        mode="data",
        class_counts=[50, 30, 7],
    )
    assert sampler.plan == BatchPlan((4, 3, 1), (0, 0, 0))
    assert sampler.synthetic_share == pytest.approx(50 / 57)  # (45 + 5) of (5 + 2 real + 50 synthetic)
    classes = np.concatenate([labels, synthetic_labels])
    batches = list(sampler)
    assert all(np.bincount(classes[b], minlength=3).tolist() == [4, 3, 1] for b in batches)
    drawn = np.concatenate(batches)
    for c, n_synthetic in ((0, 45), (2, 5)):
        of_class = drawn[classes[drawn] == c]
        assert set(of_class) == set(np.flatnonzero(classes == c))  # every real and synthetic one is seen
        assert (of_class >= len(labels)).mean() == pytest.approx(n_synthetic / (n_synthetic + (5, 0, 2)[c]))


@pytest.mark.parametrize(("mode", "share"), [("replace", 4 / 7), ("add", 4 / 11), ("data", 20 / 100)])
def test_synthetic_share_pools_the_synthetic_classes(mode: str, share: float):
    """Synthetic CNV and NORMAL at R=50, batches of 8 with 4 CNV and 3 NORMAL slots: replace makes 2 and 2 (1.5
    rounds up) of those 7 slots synthetic (not the mean of 2/4 and 2/3); add puts the 4 on top of them, 4 of
    11; data pools the 20 synthetic with the 50 + 30 real of the two classes."""
    sampler = RatioBatchSampler(
        LABELS,
        synthetic_labels=np.repeat([0, 1], [12, 8]),
        synthetic_classes=[0, 1],
        ratio=50,
        batch_size=8,
        steps=1,
        seed=0,
        mode=mode,
    )
    assert sampler.synthetic_share == pytest.approx(share)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"synthetic_classes": [0, 0]}, r"synthetic classes \[0, 0\]; expected distinct classes of labels, 0..2"),
        ({"synthetic_classes": [0, -1]}, r"synthetic classes \[0, -1\]; expected distinct classes of labels, 0..2"),
        ({"synthetic_classes": []}, r"ratio=50 needs one or more synthetic classes, got none"),
        (
            {"synthetic_labels": np.array([0, 1, 2])},
            r"synthetic_labels hold classes \[2\]; expected only the synthetic classes \[0, 1\]",
        ),
        ({"synthetic_labels": np.zeros(5)}, r"ratio=50 needs synthetic examples of class 1, got none"),
        ({"synthetic_labels": np.ones(5), "mode": "add"}, r"ratio=50 needs synthetic examples of class 0, got none"),
    ],
)
def test_bad_synthetic_classes_raise_naming_the_values(kwargs: dict, message: str):
    args = {"synthetic_labels": np.array([0, 1]), "synthetic_classes": [0, 1], "ratio": 50, "batch_size": 8}
    with pytest.raises(ValueError, match=message):
        RatioBatchSampler(LABELS, **{**args, **kwargs}, steps=1, seed=0)


def test_data_mode_needs_no_synthetic_example_of_every_class():
    """data mode fills left-out scans: a class with none left out has none to fill, at any R."""
    sampler = RatioBatchSampler(
        LABELS,
        synthetic_labels=np.zeros(5),
        synthetic_classes=[0, 1],
        ratio=50,
        batch_size=8,
        steps=2,
        seed=0,
        mode="data",
    )
    assert sampler.synthetic_share == pytest.approx(5 / 85)
