import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from synthratio.config import EvaluateConfig
from synthratio.evaluation import evaluate
from synthratio.evaluation.evaluate import RealScans, evaluate_synthetic
from synthratio.evaluation.features import write_png_folder

CPU = torch.device("cpu")
CONFIG = EvaluateConfig(
    encoder_seed=0, real_split="val", min_images=4, inception_weights=None, kid_subset_size=8, nearest_k=3,
    floor_splits=3, memorization_quantile=0.1, pixel_size=64, detector_epochs=1, detector_image_size=16, bootstrap=100,
    seed=0, batch_size=8, workers=0,
)  # fmt: skip


@pytest.fixture
def real(scans) -> RealScans:
    return RealScans(heldout=scans(20, seed=0), heldout_groups=np.arange(20) // 2, train=scans(16, seed=3))


@pytest.mark.parametrize("min_images, few", [(4, False), (100, True)])
def test_every_metric_present_finite_and_few_images_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, real: RealScans, scans, pool_features, min_images: int, few: bool
):
    files = write_png_folder(scans(12, seed=1), tmp_path / "synthetic" / "CNV")
    config = dataclasses.replace(CONFIG, min_images=min_images)

    with caplog.at_level(logging.WARNING, logger=evaluate.__name__):
        metrics = evaluate_synthetic(
            files,
            real,
            pool_features,
            device=CPU,
            config=config,
            workdir=tmp_path / "work",
            memorization_plot=tmp_path / "mem.png",
        )

    figures = ("fid", "kid", "precision", "recall", "density", "coverage")
    spaces = [f"domain_{m}{floor}" for m in figures for floor in ("", "_floor", "_floor_sd")]
    memorized = [f"memorized_{m}_{s}" for m in ("share", "threshold") for s in ("features", "pixels")]
    memorized += [f"memorized_share_{s}_floor" for s in ("features", "pixels")]
    copying = [f"copying_{m}_{s}" for m in ("auroc", "p") for s in ("features", "pixels")]
    copying += [f"copying_auroc_{s}_se" for s in ("features", "pixels")]
    detector = [
        f"detector_{m}" for m in ("auroc", "auroc_ci_low", "auroc_ci_high", "accuracy", "n_train", "n_val", "n_test")
    ]
    counts = ["n_synthetic", "n_real", "n_real_train", "n_real_half", "n_compared", "n_compared_patients"]
    counts += ["nearest_k", "floor_splits", "memorized_pixel_size", "copying_draws"]
    assert set(metrics) == {*spaces, *memorized, *copying, *detector, *counts, "inception", "few_images"}
    assert all(math.isfinite(v) for v in metrics.values())
    json.dumps(metrics, allow_nan=False)  # plain JSON for dvc exp show
    # 10 held-out patients of 2 scans: a half holds 5 patients, compared one scan each
    assert (metrics["n_synthetic"], metrics["n_real"], metrics["n_real_train"], metrics["n_compared"]) == (
        12,
        20,
        16,
        5,
    )
    assert metrics["detector_auroc_ci_low"] <= metrics["detector_auroc"] <= metrics["detector_auroc_ci_high"]
    for space in ("features", "pixels"):
        assert 0 < metrics[f"copying_p_{space}"] < 1 and 0 < metrics[f"copying_auroc_{space}"] < 1
        assert metrics[f"copying_auroc_{space}_se"] > 0
    assert metrics["copying_draws"] == CONFIG.bootstrap
    assert metrics["inception"] is False
    assert metrics["few_images"] is few
    assert ("biased and unstable" in caplog.text) is few
    assert (tmp_path / "mem.png").stat().st_size > 5_000


def test_inception_space_sees_clean_fid_299px(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real, scans, pool_features
):
    seen: set[tuple[int, ...]] = set()

    def fake_inception(batch: torch.Tensor) -> torch.Tensor:
        seen.add(tuple(batch.shape[1:]))
        return nn.functional.adaptive_avg_pool2d(batch, 2).flatten(1)

    monkeypatch.setattr(evaluate, "inception_available", lambda weights: True)
    monkeypatch.setattr(evaluate, "build_feature_extractor", lambda mode, device: fake_inception)
    files = write_png_folder(scans(6, seed=1), tmp_path / "synthetic")

    metrics = evaluate_synthetic(files, real, pool_features, device=CPU, config=CONFIG, workdir=tmp_path / "work")

    assert seen == {(3, 299, 299)}
    assert metrics["inception"] is True
    assert {"inception_fid", "inception_kid_floor", "inception_precision", "inception_coverage_floor"} <= set(metrics)


@pytest.mark.parametrize("make_folder", [False, True])
def test_missing_or_empty_synthetic_folder_named(tmp_path: Path, real, pool_features, make_folder: bool):
    folder = tmp_path / "no_samples"
    if make_folder:
        folder.mkdir()
    files = [folder / f"{seed:06d}.png" for seed in range(4)]
    with pytest.raises(FileNotFoundError, match=f"{folder} holds none of the 4 listed images"):
        evaluate_synthetic(files, real, pool_features, device=CPU, config=CONFIG, workdir=tmp_path / "work")


def test_mixed_synthetic_sizes_name_a_file_and_the_sizes(tmp_path: Path, real, scans, pool_features):
    files = write_png_folder(scans(3, seed=1), tmp_path / "synthetic")
    files += write_png_folder(scans(1, seed=2, size=24), tmp_path / "wide")
    with pytest.raises(ValueError, match=r"16x16 px: 3 images, 24x24 px: 1 images\), e.g. .*wide/000000.png"):
        evaluate_synthetic(files, real, pool_features, device=CPU, config=CONFIG, workdir=tmp_path / "work")


def test_synthetic_at_another_size_than_real_named(tmp_path: Path, real, scans, pool_features):
    files = write_png_folder(scans(6, seed=1, size=24), tmp_path / "synthetic")
    with pytest.raises(ValueError, match=r"synthetic scans are 24x24 px .*real held-out 16x16 px"):
        evaluate_synthetic(files, real, pool_features, device=CPU, config=CONFIG, workdir=tmp_path / "work")
    assert not (tmp_path / "work").exists()  # refused before any work


@pytest.mark.parametrize("pixel_size, compared", [(8, 8), (64, 16)])  # capped, or the scans' own 16 px
def test_pixel_memorization_compares_at_the_capped_size(
    tmp_path: Path, real: RealScans, pool_features, pixel_size, compared
):
    files = write_png_folder(real.train[:6], tmp_path / "synthetic" / "CNV")  # copies of training scans
    config = dataclasses.replace(CONFIG, pixel_size=pixel_size)

    metrics = evaluate_synthetic(files, real, pool_features, device=CPU, config=config, workdir=tmp_path / "work")

    assert metrics["memorized_pixel_size"] == compared
    assert metrics["memorized_share_pixels"] == 1.0
    # every copy nearer its training scan than any held-out scan: the copying test sees them in both spaces
    assert (metrics["copying_auroc_pixels"], metrics["copying_p_pixels"]) == (1.0, 0.0)
    assert metrics["copying_p_features"] < 0.05
