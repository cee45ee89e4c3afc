import numpy as np
import pytest
import torch

from synthratio.evaluation.detector import REAL, SYNTHETIC, detect_synthetic, detector_splits, resize_scans

CPU = torch.device("cpu")


def test_splits_are_balanced_and_patient_disjoint(scans):
    real_train, heldout, synthetic = scans(30, seed=0), scans(20, seed=1), scans(40, seed=2)
    groups = np.repeat(np.arange(10), 2)  # two scans per patient

    parts = detector_splits(real_train, heldout, groups, synthetic, seed=0)
    train, val, test = parts.train, parts.val, parts.test

    for part in (train, val, test):
        assert (part.labels == REAL).sum() == (part.labels == SYNTHETIC).sum() > 0
    val_real = {row.tobytes() for row in val.images[val.labels == REAL]}
    test_real = {row.tobytes() for row in test.images[test.labels == REAL]}
    patients = lambda part: {g for g, image in zip(groups, heldout) if image.tobytes() in part}  # noqa: E731
    assert not patients(val_real) & patients(test_real)
    synthetic_parts = [{row.tobytes() for row in part.images[part.labels == SYNTHETIC]} for part in (train, val, test)]
    assert sum(map(len, synthetic_parts)) == len(set().union(*synthetic_parts))  # no synthetic scan in two parts
    assert (len(train.labels), len(val.labels), len(test.labels)) == (2 * 20, 2 * 10, 2 * 10)
    real_units = parts.test_units[test.labels == REAL]
    assert len(np.unique(real_units)) == 5  # ten test-half scans from five patients: five resampling units
    assert len(np.unique(parts.test_units[test.labels == SYNTHETIC])) == 10  # each synthetic scan its own


def test_one_patient_group_is_refused(scans):
    with pytest.raises(ValueError, match="1 patient group"):
        detector_splits(scans(8, 0), scans(8, 1), np.zeros(8), scans(8, 2), seed=0)


@pytest.mark.parametrize("shift, low, high", [(0, 0.0, 0.8), (60, 0.95, 1.0)])
def test_auroc_near_chance_for_the_same_distribution_and_high_for_a_fingerprint(scans, shift: int, low: float, high: float):
    """A grey-level offset beyond the training jitter (brightness +-0.1 = 25 levels) is a fingerprint."""
    synthetic = np.clip(scans(64, seed=2).astype(int) + shift, 0, 255).astype(np.uint8)
    result = detect_synthetic(scans(64, 0), scans(32, 1), np.arange(32) // 2, synthetic, 16, epochs=4, seed=0, device=CPU)
    assert low <= result.auroc <= high
    assert (result.n_train, result.n_val, result.n_test) == (32, 16, 16)


def test_resize_scans_keeps_matching_sizes_and_resizes_others(scans):
    images = scans(3, seed=0)
    assert resize_scans(images, 16) is images or np.shares_memory(resize_scans(images, 16), images)
    assert resize_scans(images, 8).shape == (3, 8, 8) and resize_scans(images, 8).dtype == np.uint8
