import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from synthratio.evaluation import distances
from cleanfid import fid

from synthratio.evaluation.distances import distance_pair, evaluate_synthetic, feature_distances, frechet_distance
from synthratio.evaluation.features import classifier_feature_fn, write_png_folder

CPU = torch.device("cpu")


class PoolEncoder(nn.Module):
    """Stand-in classifier whose embedding is the 4x4 average-pooled image."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def scans(n: int, seed: int, size: int = 16) -> np.ndarray:
    """Bright band on a dark background with per-image position jitter and speckle, uint8 (n, size, size)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(size)[None, :, None]
    centre = size / 2 + rng.normal(0, 2, (n, 1, 1))
    band = 160 * np.exp(-((rows - centre) ** 2) / 8) + 40
    return np.clip(band + rng.normal(0, 20, (n, size, size)), 0, 255).astype(np.uint8)


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

    result = feature_distances(synthetic, real, kid_subset_size=10, seed=0)

    assert {k: round(v, 4) for k, v in result.items()} == {
        "fid": 1.1996,
        "kid": 0.9534,
        "fid_floor": 0.2765,
        "kid_floor": -0.3656,
        "n_synthetic": 30,
        "n_real_half": 20,
        "n_compared": 20,
    }
    assert feature_distances(synthetic, real, kid_subset_size=10, seed=0) == result
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])


def test_floor_is_small_and_a_shifted_set_scores_far_above_it():
    real = scans(64, seed=0).reshape(64, -1).astype(np.float64) / 255
    same = scans(32, seed=1).reshape(32, -1).astype(np.float64) / 255

    near = feature_distances(same, real, kid_subset_size=16)
    far = feature_distances(np.clip(same + 0.3, 0, 1), real, kid_subset_size=16)

    assert near["fid_floor"] == far["fid_floor"]
    assert near["fid"] < 2 * near["fid_floor"]
    assert far["fid"] > 4 * max(near["fid"], near["fid_floor"])
    assert far["kid"] > 10 * max(abs(near["kid"]), abs(near["kid_floor"]))


def test_fewer_synthetic_than_half_the_real_rows_cuts_both_compared_sets():
    rng = np.random.default_rng(0)
    result = feature_distances(rng.normal(size=(5, 2)), rng.normal(size=(20, 2)), kid_subset_size=50)
    assert (result["n_synthetic"], result["n_real_half"], result["n_compared"]) == (5, 10, 5)


@pytest.mark.parametrize("n_synthetic, n_real", [(10, 3), (1, 10)])
def test_too_few_rows_named(n_synthetic: int, n_real: int):
    with pytest.raises(ValueError, match=f"{n_synthetic} synthetic and {n_real} real"):
        feature_distances(np.zeros((n_synthetic, 2)), np.zeros((n_real, 2)), kid_subset_size=4)


@pytest.mark.parametrize("min_images, few", [(4, False), (100, True)])
def test_evaluate_synthetic_domain_metrics_and_few_images(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, min_images: int, few: bool
):
    write_png_folder(scans(12, seed=1), tmp_path / "synthetic" / "CNV")
    feature_fn = classifier_feature_fn(PoolEncoder(), image_size=16, device=CPU)

    with caplog.at_level(logging.WARNING, logger=distances.__name__):
        metrics = evaluate_synthetic(
            tmp_path / "synthetic", scans(20, seed=0), feature_fn, CPU, min_images, 8, None, tmp_path / "work"
        )

    assert set(metrics) == {
        "domain_fid", "domain_kid", "domain_fid_floor", "domain_kid_floor",
        "n_synthetic", "n_real", "n_real_half", "n_compared", "inception", "few_images",
    }  # fmt: skip
    assert (metrics["n_synthetic"], metrics["n_real"], metrics["n_compared"]) == (12, 20, 10)
    assert metrics["inception"] is False
    assert metrics["few_images"] is few
    assert ("biased and unstable" in caplog.text) is few


def test_evaluate_synthetic_inception_sees_clean_fid_299px(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    seen: set[tuple[int, ...]] = set()

    def fake_inception(batch: torch.Tensor) -> torch.Tensor:
        seen.add(tuple(batch.shape[1:]))
        return nn.functional.adaptive_avg_pool2d(batch, 2).flatten(1)

    monkeypatch.setattr(distances, "inception_available", lambda weights: True)
    monkeypatch.setattr(distances, "build_feature_extractor", lambda mode, device: fake_inception)
    write_png_folder(scans(6, seed=1), tmp_path / "synthetic")
    feature_fn = classifier_feature_fn(PoolEncoder(), image_size=16, device=CPU)

    metrics = evaluate_synthetic(tmp_path / "synthetic", scans(8, seed=0), feature_fn, CPU, 2, 4, None, tmp_path / "work")

    assert seen == {(3, 299, 299)}
    assert metrics["inception"] is True
    assert {"inception_fid", "inception_kid", "inception_fid_floor", "inception_kid_floor"} <= set(metrics)


def test_evaluate_synthetic_names_a_missing_synthetic_folder(tmp_path: Path):
    feature_fn = classifier_feature_fn(PoolEncoder(), image_size=16, device=CPU)
    with pytest.raises(FileNotFoundError, match="no_samples"):
        evaluate_synthetic(tmp_path / "no_samples", scans(8, seed=0), feature_fn, CPU, 2, 4, None, tmp_path / "work")
