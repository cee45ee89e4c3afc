import numpy as np
import pytest
import torch
from PIL import Image

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


@pytest.mark.parametrize(("n_synthetic", "sizes"), [(24, (12, 6, 6)), (100, (30, 10, 10)), (44, (24, 10, 10))])
def test_val_and_test_take_as_many_synthetic_scans_as_real_ones_up_to_a_quarter_each(scans, n_synthetic: int, sizes: tuple):
    """Held-out halves of 10 real scans; val and test get min(10, n/4) synthetic scans, train the rest, each part
    cut to its smaller side."""
    parts = detector_splits(scans(30, seed=0), scans(20, seed=1), np.repeat(np.arange(10), 2), scans(n_synthetic, seed=2), seed=0)
    assert tuple((part.labels == SYNTHETIC).sum() for part in (parts.train, parts.val, parts.test)) == sizes
    assert tuple((part.labels == REAL).sum() for part in (parts.train, parts.val, parts.test)) == sizes
    assert parts.test.labels.dtype == np.int64 and (parts.test.labels[: sizes[2]] == REAL).all()
    assert len(parts.test_units) == 2 * sizes[2] and parts.test_units.max() + 1 == len(np.unique(parts.test_units))
    for part in (parts.train, parts.val, parts.test):  # drawn without replacement: no scan twice
        assert len({image.tobytes() for image in part.images}) == len(part.images)
    again = detector_splits(scans(30, seed=0), scans(20, seed=1), np.repeat(np.arange(10), 2), scans(n_synthetic, seed=2), seed=0)
    np.testing.assert_array_equal(again.test.images, parts.test.images)  # the seed fixes the parts


def test_a_part_without_real_or_synthetic_scans_is_named(scans):
    with pytest.raises(ValueError, match="detector val part has 10 real and 0 synthetic scans; needs both"):
        detector_splits(scans(30, seed=0), scans(20, seed=1), np.repeat(np.arange(10), 2), scans(3, seed=2), seed=0)
    with pytest.raises(ValueError, match="detector train part has 0 real and 20 synthetic scans; needs both"):
        detector_splits(scans(0, seed=0), scans(20, seed=1), np.repeat(np.arange(10), 2), scans(40, seed=2), seed=0)


def test_one_patient_group_is_refused(scans):
    with pytest.raises(ValueError, match="1 patient group"):
        detector_splits(scans(8, 0), scans(8, 1), np.zeros(8), scans(8, 2), seed=0)


@pytest.mark.parametrize("shift", [0, 60])
def test_auroc_is_near_chance_for_the_same_distribution_and_high_for_a_fingerprint(scans, shift: int):
    """A grey-level offset beyond the training jitter (brightness +-0.1 = 25 levels) is a fingerprint. Without
    one, the AUROC sits near 0.5 on both sides (an inverted or leaking detector leaves that band) with an
    interval that contains 0.5: 48 real and 48 synthetic test scans, so chance spreads by about +-0.06."""
    synthetic = np.clip(scans(192, seed=2).astype(int) + shift, 0, 255).astype(np.uint8)
    result = detect_synthetic(scans(96, 0), scans(96, 1), np.arange(96) // 2, synthetic, 16, epochs=4, seed=0, device=CPU)
    assert (result.n_train, result.n_val, result.n_test) == (96, 48, 48) and isinstance(result.n_test, int)
    assert result.auroc_ci_low <= result.auroc <= result.auroc_ci_high
    if shift:
        assert result.auroc > 0.95 and result.auroc_ci_low > 0.9 and result.accuracy > 0.85
    else:
        assert 0.35 <= result.auroc <= 0.65 and result.auroc_ci_low < 0.5 < result.auroc_ci_high
        assert 0.3 <= result.accuracy <= 0.7
        assert result.auroc_ci_high - result.auroc_ci_low < 0.35
        # one seeded check against fixed numbers (CPU, one thread): 1000 resamples, 95 %
        assert (round(result.auroc, 4), round(result.auroc_ci_low, 4), round(result.auroc_ci_high, 4)) == (0.5234, 0.4036, 0.6476)


def test_resize_scans_keeps_matching_sizes_and_resizes_others(scans):
    images = scans(3, seed=0)
    assert resize_scans(images, 16) is images or np.shares_memory(resize_scans(images, 16), images)
    assert resize_scans(images, 8).shape == (3, 8, 8) and resize_scans(images, 8).dtype == np.uint8
    lanczos = [np.asarray(Image.fromarray(image).resize((8, 8), Image.Resampling.LANCZOS)) for image in images]
    np.testing.assert_array_equal(resize_scans(images, 8), lanczos)  # as prepare resizes: no resampling fingerprint
