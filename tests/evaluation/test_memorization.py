from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthratio.evaluation.memorization import memorization, nearest_rows, pixel_rows, save_memorization_grid


def test_copies_are_memorized_and_unseen_real_sits_near_the_quantile():
    rng = np.random.default_rng(0)
    train, reference, floor = rng.normal(size=(300, 8)), rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    copies = train[:50] + rng.normal(scale=0.01, size=(50, 8))

    copied = memorization(copies, reference, floor, train, quantile=0.1)
    honest = memorization(rng.normal(size=(200, 8)), reference, floor, train, quantile=0.1)

    assert copied.share == 1.0
    np.testing.assert_array_equal(copied.nearest.index, np.arange(50))
    assert copied.nearest.distance.max() < 0.1 < copied.threshold
    assert 0.04 < honest.share < 0.2 and 0.04 < honest.share_floor < 0.2
    assert copied.threshold == honest.threshold  # set by the real reference rows alone


def test_pixel_rows_give_the_exact_l2_distance_of_the_images():
    a, b = np.zeros((1, 2, 2), np.uint8), np.array([[[3, 0], [0, 4]]], np.uint8)
    nearest = nearest_rows(pixel_rows(a), pixel_rows(b))
    assert nearest.distance[0] == 5.0 and nearest.index[0] == 0


@pytest.mark.parametrize("chunk_bytes", [8, 8 * 16 * 7, 2**20])  # one row per block, 7-row blocks, one block
def test_blockwise_search_matches_brute_force(chunk_bytes: int):
    rng = np.random.default_rng(1)
    query, reference = rng.integers(0, 256, (30, 16), dtype=np.uint8), rng.integers(0, 256, (45, 16), dtype=np.uint8)
    reference[40] = reference[3]  # a duplicate: the earlier row wins the tie
    query[0] = reference[3]
    brute = np.linalg.norm(query[:, None, :].astype(float) - reference[None, :, :].astype(float), axis=2)

    nearest = nearest_rows(query, reference, chunk_bytes=chunk_bytes)  # on the CPU, as in CI

    np.testing.assert_allclose(nearest.distance, brute.min(1), rtol=1e-12)
    np.testing.assert_array_equal(nearest.index, brute.argmin(1))
    assert nearest.distance[0] == 0.0 and nearest.index[0] == 3


@pytest.mark.parametrize("quantile", [0.0, 1.0])
def test_quantile_outside_zero_one_named(quantile: float):
    rows = np.zeros((3, 2))
    with pytest.raises(ValueError, match=f"quantile={quantile}"):
        memorization(rows, rows, rows, rows, quantile)


def test_grid_png_written(tmp_path: Path, scans):
    images = scans(12, seed=0)
    rows = pixel_rows(images)
    result = memorization(rows[:4], rows[4:8], rows[8:], rows[4:], quantile=0.5)
    path = tmp_path / "plots" / "memorization.png"

    save_memorization_grid(images[:4], images[4:], {"pixels": result, "features": result}, path)

    with Image.open(path) as png:
        assert png.size[0] > 300 and png.size[1] > 500  # 4 pairs wide, two spaces of two rows tall
    assert [p.name for p in path.parent.iterdir()] == ["memorization.png"]  # no temporary file left
