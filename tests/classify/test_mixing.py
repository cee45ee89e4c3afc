import numpy as np
import pytest

from synthratio.classify.mixing import BatchPlan, RatioBatchSampler, plan_batches

# 0 = CNV (the synthetic class), 1 = NORMAL, 2 = DME: imbalanced 50 / 30 / 7
LABELS = np.repeat([0, 1, 2], [50, 30, 7])
NUM_SYNTHETIC = 13


@pytest.mark.parametrize(
    ("labels", "batch_size", "ratio", "expected"),
    [
        (LABELS, 8, 25, BatchPlan((4, 3, 1), 1)),  # quotas 4.60, 2.76, 0.64: .76 and .64 get the spares
        (LABELS, 32, 50, BatchPlan((18, 11, 3), 9)),  # 18.39, 11.03, 2.57
        (LABELS, 33, 100, BatchPlan((19, 11, 3), 19)),  # 18.97, 11.38, 2.66
        (np.repeat([0, 1], [99, 1]), 4, 10, BatchPlan((3, 1), 0)),  # the rare class still gets one
        (np.repeat([0, 1], [10, 10]), 10, 10, BatchPlan((5, 5), 1)),  # 10% of 5 = 0.5 rounds up, exactly
    ],
)
def test_plan(labels: np.ndarray, batch_size: int, ratio: int, expected: BatchPlan):
    assert plan_batches(labels, batch_size, 0, ratio) == expected


@pytest.mark.parametrize("batch_size", [8, 32, 33])
@pytest.mark.parametrize("ratio", [0, 25, 50, 100])
def test_every_batch_has_the_planned_composition(batch_size: int, ratio: int):
    plan = plan_batches(LABELS, batch_size, 0, ratio)
    sampler = RatioBatchSampler(LABELS, NUM_SYNTHETIC, 0, ratio, batch_size, steps=20, seed=0)
    all_labels = np.concatenate([LABELS, np.zeros(NUM_SYNTHETIC, int)])
    batches = list(sampler)
    assert len(batches) == len(sampler) == 20
    for batch in batches:
        is_synthetic = batch >= len(LABELS)
        assert len(batch) == batch_size
        assert np.bincount(all_labels[batch], minlength=3).tolist() == list(plan.per_class)
        assert is_synthetic.sum() == plan.synthetic
    if ratio == 100:
        assert all((LABELS[b[b < len(LABELS)]] != 0).all() for b in batches)  # no real CNV at all


def test_each_pool_is_walked_without_replacement_per_pass():
    """Real CNV (indices 0..49, 3 per batch of 8 at R=25) repeats only after all 50 have been drawn."""
    sampler = RatioBatchSampler(LABELS, NUM_SYNTHETIC, 0, 25, 8, steps=25, seed=1)
    drawn = np.concatenate([b[b < 50] for b in sampler])
    assert len(drawn) == 75
    assert sorted(drawn[:50]) == list(range(50))
    synthetic = np.concatenate([b[b >= len(LABELS)] for b in sampler]) - len(LABELS)
    assert sorted(synthetic[:NUM_SYNTHETIC]) == list(range(NUM_SYNTHETIC))


def test_deterministic_for_a_seed():
    def batches(seed: int) -> list[list[int]]:
        return [b.tolist() for b in RatioBatchSampler(LABELS, NUM_SYNTHETIC, 0, 50, 16, steps=10, seed=seed)]

    assert batches(3) == batches(3)
    assert batches(3) != batches(4)


def test_ratio_zero_needs_no_synthetic():
    assert all((b < len(LABELS)).all() for b in RatioBatchSampler(LABELS, 0, 0, 0, 8, steps=5, seed=0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_synthetic": 0, "ratio": 50}, r"ratio=50 needs synthetic examples, got num_synthetic=0"),
        ({"ratio": 101}, r"ratio=101; expected a percent in 0..100"),
        ({"batch_size": 2}, r"batch_size=2; .* needs >= 3"),
        ({"synthetic_label": 3}, r"synthetic_label=3; labels hold classes 0..2"),
        ({"labels": np.repeat([0, 2], [5, 5])}, r"class counts \[5, 0, 5\]"),
    ],
)
def test_bad_arguments_raise_naming_the_values(kwargs: dict, message: str):
    args = {"labels": LABELS, "num_synthetic": NUM_SYNTHETIC, "synthetic_label": 0, "ratio": 50, "batch_size": 8}
    with pytest.raises(ValueError, match=message):
        RatioBatchSampler(**{**args, **kwargs}, steps=1, seed=0)
