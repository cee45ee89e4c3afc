from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from PIL import Image
from sklearn.metrics import roc_auc_score

import synthratio.evaluation.memorization as memorization_module
import synthratio.figures as figures_module
from synthratio.evaluation.memorization import (
    Copying,
    Memorization,
    Nearest,
    copying_test,
    memorization,
    nearest_rows,
    pixel_rows,
)
from synthratio.figures import save_memorization_grid


def test_copies_are_memorized_and_unseen_real_sits_near_the_quantile():
    rng = np.random.default_rng(0)
    train, reference, floor = rng.normal(size=(300, 8)), rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    copies = train[:50] + rng.normal(scale=0.01, size=(50, 8))

    copied = memorization(copies, real_reference=reference, real_floor=floor, train=train, quantile=0.1)
    honest = memorization(
        rng.normal(size=(200, 8)), real_reference=reference, real_floor=floor, train=train, quantile=0.1
    )

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
        memorization(rows, real_reference=rows, real_floor=rows, train=rows, quantile=quantile)


def test_grid_png_written(tmp_path: Path, scans):
    images = scans(12, seed=0)
    rows = pixel_rows(images)
    result = memorization(rows[:4], real_reference=rows[4:8], real_floor=rows[8:], train=rows[4:], quantile=0.5)
    path = tmp_path / "plots" / "memorization.png"

    save_memorization_grid(images[:4], images[4:], {"pixels": result, "features": result}, path=path)

    with Image.open(path) as png:
        assert png.size[0] > 300 and png.size[1] > 500  # 4 pairs wide, two spaces of two rows tall
    assert [p.name for p in path.parent.iterdir()] == ["memorization.png"]  # no temporary file left


def test_grid_shows_the_closest_pairs_first_with_memorized_distances_in_red(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Pairs sorted by distance (ties in order), each synthetic scan above its nearest training scan, red at or
    below the threshold; one panel per space with its threshold and shares."""
    figures = []
    monkeypatch.setattr(figures_module.plt, "close", figures.append)  # keep the figure to look at
    rng = np.random.default_rng(0)
    synthetic, train = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8), rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    pixels = Memorization(
        threshold=1.0,
        share=0.6,
        share_floor=0.125,
        nearest=Nearest(np.array([5.0, 1.0, 3.0, 0.0, 1.0]), np.array([0, 1, 4, 2, 5])),
        real_distance=np.array([1.0, 2.0]),
    )
    features = Memorization(
        threshold=0.5,
        share=0.2,
        share_floor=0.05,
        nearest=Nearest(np.array([0.25, 2.0, 3.0, 4.0, 5.0]), np.array([3, 3, 3, 3, 3])),
        real_distance=np.array([1.0, 2.0]),
    )
    path = tmp_path / "grid.png"
    save_memorization_grid(synthetic, train, {"pixels": pixels, "features": features}, path=path, pairs=4)
    with Image.open(path) as png:
        assert png.size == (720, 864)  # 1.5 in per pair, 3.6 in per space, at 120 dpi
    (figure,) = figures
    assert type(figure.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
    panels = figure.subfigs
    assert [panel._suptitle.get_text() for panel in panels] == [
        "pixels: threshold 1, memorized 60.0% of synthetic (12.5% of unseen real)",
        "features: threshold 0.5, memorized 20.0% of synthetic (5.0% of unseen real)",
    ]
    assert all(panel._suptitle.get_fontsize() == 9 for panel in panels)
    top, bottom = panels[0].axes[:4], panels[0].axes[4:]
    assert [ax.get_title() for ax in top] == ["d=0", "d=1", "d=1", "d=3"]
    assert [to_hex(ax.title.get_color()) for ax in top] == [to_hex("tab:red")] * 3 + [to_hex("black")]
    assert all(ax.title.get_fontsize() == 7 for ax in top)
    for ax, row in zip(top, [3, 1, 4, 2]):
        np.testing.assert_array_equal(ax.images[0].get_array(), synthetic[row])
    for ax, row in zip(bottom, [2, 1, 5, 4]):
        np.testing.assert_array_equal(ax.images[0].get_array(), train[row])
    for ax in [*top, *bottom]:
        assert ax.images[0].get_clim() == (0, 255) and ax.images[0].get_cmap().name == "gray"
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
    assert (top[0].get_ylabel(), bottom[0].get_ylabel(), top[0].yaxis.label.get_fontsize()) == (
        "synthetic",
        "nearest train",
        8,
    )
    assert bottom[0].yaxis.label.get_fontsize() == 8
    assert [ax.get_title() for ax in panels[1].axes[:4]] == ["d=0.25", "d=2", "d=3", "d=4"]


@pytest.mark.parametrize(("n", "size"), [(3, (540, 432)), (1, (180, 432))])
def test_grid_shows_at_most_as_many_pairs_as_synthetic_scans(tmp_path: Path, scans, n: int, size: tuple[int, int]):
    images = scans(9, seed=0)
    result = memorization(
        pixel_rows(images[:n]),
        real_reference=pixel_rows(images[3:5]),
        real_floor=pixel_rows(images[5:7]),
        train=pixel_rows(images[3:]),
        quantile=0.5,
    )
    save_memorization_grid(images[:n], images[3:], {"pixels": result}, path=tmp_path / "grid.png")
    with Image.open(tmp_path / "grid.png") as png:
        assert png.size == size  # n pairs (of the default 8), one space


def test_threshold_share_and_floor_count_distances_at_the_threshold():
    """Reference distances 1, 2, 3 set the median threshold 2; a floor scan and a synthetic scan at exactly 2 count."""
    train = np.zeros((1, 1))
    reference = np.array([[1.0], [2.0], [3.0]])
    result = memorization(
        np.array([[2.0], [5.0]]),
        real_reference=reference,
        real_floor=np.array([[2.0], [4.0]]),
        train=train,
        quantile=0.5,
    )
    assert (result.threshold, result.share, result.share_floor) == (2.0, 0.5, 0.5)
    np.testing.assert_array_equal(result.real_distance, [1.0, 2.0, 3.0, 2.0, 4.0])  # reference rows, then floor
    one = memorization(
        np.array([[2.0]]), real_reference=reference, real_floor=np.array([[2.0]]), train=train, quantile=0.25
    )
    assert one.threshold == 1.5


@pytest.mark.parametrize("name", ["synthetic", "real_reference", "real_floor"])
@pytest.mark.parametrize("rows", [np.zeros((0, 4)), np.zeros((3, 5)), np.zeros(4)])
def test_rows_of_the_wrong_shape_are_named(name: str, rows: np.ndarray):
    sets = {
        "synthetic": np.zeros((2, 4)),
        "real_reference": np.zeros((2, 4)),
        "real_floor": np.zeros((2, 4)),
        name: rows,
    }
    with pytest.raises(
        ValueError,
        match=rf"{name} rows of shape \({', '.join(map(str, rows.shape))},?\); expected \(N >= 1, 4\) like train",
    ):
        memorization(
            sets["synthetic"],
            real_reference=sets["real_reference"],
            real_floor=sets["real_floor"],
            train=np.zeros((3, 4)),
            quantile=0.5,
        )


def test_an_empty_training_set_is_named():
    with pytest.raises(ValueError, match=r"train rows of shape \(0, 4\); expected \(N >= 1, 4\) like train"):
        rows = np.zeros((2, 4))
        memorization(rows, real_reference=rows, real_floor=rows, train=np.zeros((0, 4)), quantile=0.5)


@pytest.mark.parametrize(("chunk_bytes", "rows"), [(8, 1), (8 * 16 * 7, 7), (8 * 16 * 7 + 127, 7)])
def test_blocks_hold_as_many_float64_rows_as_chunk_bytes_allow(
    monkeypatch: pytest.MonkeyPatch, chunk_bytes: int, rows: int
):
    """Memory stays at a few blocks of chunk_bytes (the full training set as float64 would not fit): 16-pixel
    rows are 128 float64 bytes, so a block holds chunk_bytes // 128 rows, and one row when a row alone is larger."""
    sizes = []
    blocks = memorization_module._blocks

    def recorded(rows_in, size, device):
        for start, block, norm in blocks(rows_in, size, device):
            sizes.append(len(block))
            yield start, block, norm

    monkeypatch.setattr(memorization_module, "_blocks", recorded)
    rng = np.random.default_rng(2)
    nearest_rows(
        rng.integers(0, 256, (20, 16), dtype=np.uint8),
        rng.integers(0, 256, (30, 16), dtype=np.uint8),
        chunk_bytes=chunk_bytes,
    )
    assert max(sizes) == rows


def test_the_search_runs_on_the_device_it_is_given():
    """On PyTorch's meta device (shapes, no data) every step runs until the distances are copied back, which
    a meta tensor cannot do; a tensor left on the CPU fails earlier, on a device mismatch. On a GPU such a
    tensor would crash the evaluation stage or search 10 GB of pixels on the CPU."""
    meta = torch.device("meta")
    rows = np.zeros((3, 4), np.uint8)
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta tensor"):
        nearest_rows(rows, np.ones((5, 4), np.uint8), device=meta, chunk_bytes=8 * 4 * 2)
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta tensor"):
        memorization(rows, real_reference=rows, real_floor=rows, train=rows, quantile=0.5, device=meta)
    start, block, norm = next(memorization_module._blocks(rows, 2, meta))
    assert (start, block.device, block.dtype, norm.device, tuple(norm.shape)) == (0, meta, torch.float64, meta, (2,))


def test_grid_keeps_tied_distances_in_scan_order_among_many(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Duplicated synthetic scans tie on their distance; the grid shows the first of them, in scan order (a
    stable sort), so the same result always draws the same figure. numpy's default sort reorders ties once
    there are more than 16 values (64 here)."""
    figures = []
    monkeypatch.setattr(figures_module.plt, "close", figures.append)
    distance = np.random.default_rng(3).integers(0, 3, 64).astype(float)  # 0, 1 or 2: many ties
    synthetic = np.repeat(np.arange(64, dtype=np.uint8), 16).reshape(64, 4, 4)  # scan i: all pixels i
    result = Memorization(
        threshold=0.0,
        share=0.0,
        share_floor=0.0,
        nearest=Nearest(distance, np.zeros(64, dtype=np.int64)),
        real_distance=np.zeros(2),
    )
    save_memorization_grid(synthetic, np.zeros((1, 4, 4), np.uint8), {"pixels": result}, path=tmp_path / "grid.png")
    shown = [int(ax.images[0].get_array()[0, 0]) for ax in figures[0].subfigs[0].axes[:8]]
    assert shown == list(np.flatnonzero(distance == 0)[:8])


def test_nearest_row_indices_stay_exact_past_float32_integers():
    """Row 2^24 + 1 of the reference is the copy. Indices are int64 all the way: a float32 index would round
    it to 2^24 and the grid would show the wrong training scan as the copy (16.8M one-pixel rows: 17 MB)."""
    reference = np.full((2**24 + 2, 1), 200, np.uint8)
    reference[2**24 + 1] = 7
    nearest = nearest_rows(np.array([[7]], np.uint8), reference, chunk_bytes=2**20)
    assert (nearest.index[0], nearest.distance[0], nearest.index.dtype) == (2**24 + 1, 0.0, np.int64)


def test_grid_is_a_png_whatever_the_file_suffix(tmp_path: Path, scans):
    """The format is PNG by decision, not guessed from the output name (an unknown suffix would fail)."""
    images = scans(4, seed=0)
    result = memorization(
        pixel_rows(images[:2]),
        real_reference=pixel_rows(images[2:3]),
        real_floor=pixel_rows(images[3:]),
        train=pixel_rows(images[2:]),
        quantile=0.5,
    )
    save_memorization_grid(images[:2], images[2:], {"pixels": result}, path=tmp_path / "grid.out")
    assert (tmp_path / "grid.out").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_copying_auroc_is_mann_whitney_with_ties_half_and_p_follows_its_side():
    """The statistic is sklearn's AUROC of "synthetic" scored by smaller distance; copies push it towards 1
    and p towards 0, scans farther than real ones towards 0 and 1."""
    rng = np.random.default_rng(0)
    synthetic, real = rng.integers(0, 6, 40).astype(float), rng.integers(0, 6, 30).astype(float)  # many ties
    result = copying_test(synthetic, real, np.arange(30) // 3, draws=200, seed=0)
    labels = np.r_[np.ones(40), np.zeros(30)]
    assert result.auroc == pytest.approx(roc_auc_score(labels, -np.r_[synthetic, real]), abs=1e-12)
    assert (result.draws, result.se > 0) == (200, True)
    copied = copying_test(synthetic - 3, real, np.arange(30) // 3, draws=200, seed=0)
    farther = copying_test(synthetic + 3, real, np.arange(30) // 3, draws=200, seed=0)
    assert copied.auroc > 0.8 and copied.p < 1e-3
    assert farther.auroc < 0.2 and farther.p > 0.999
    assert copying_test(synthetic, real, np.arange(30) // 3, draws=200, seed=0) == result  # seeded


def test_copying_se_resamples_patients_not_scans():
    """Each real patient's scan repeated three times is still one patient's worth of evidence: the
    standard error stays that of one scan a patient, where resampling scans would shrink it (towards 1 /
    sqrt(3) of it) and make p look more certain than the data are."""
    rng = np.random.default_rng(1)
    synthetic, real = rng.normal(size=200), rng.normal(size=40)
    single = copying_test(synthetic, real, np.arange(40), draws=2000, seed=0)
    tripled = copying_test(synthetic, np.repeat(real, 3), np.repeat(np.arange(40), 3), draws=2000, seed=0)
    as_scans = copying_test(synthetic, np.repeat(real, 3), np.arange(120), draws=2000, seed=0)
    assert tripled == single  # the same 40 patients drawn alike: the same figures
    assert as_scans.se < 0.8 * tripled.se and as_scans.p > tripled.p


def test_copying_test_without_spread_and_of_too_few_is_named():
    """Every synthetic scan nearer than every real one: every draw gives 1, se 0, p 0; the reverse p 1."""
    groups = np.arange(4) // 2
    assert copying_test(np.zeros(3), np.ones(4), groups, draws=10, seed=0) == Copying(1.0, 0.0, 0.0, 10)
    assert copying_test(np.ones(3), np.zeros(4), groups, draws=10, seed=0).p == 1.0
    with pytest.raises(ValueError, match="1 synthetic scans, 2 real patients and draws=10"):
        copying_test(np.zeros(1), np.ones(4), groups, draws=10, seed=0)
    with pytest.raises(ValueError, match="3 synthetic scans, 1 real patients and draws=10"):
        copying_test(np.zeros(3), np.ones(4), np.zeros(4), draws=10, seed=0)
    with pytest.raises(ValueError, match="draws=1; a standard error needs >= 2 of each"):
        copying_test(np.zeros(3), np.ones(4), groups, draws=1, seed=0)
    with pytest.raises(ValueError, match="3 patient groups for 4 real distances"):
        copying_test(np.zeros(3), np.ones(4), groups[:3], draws=10, seed=0)
    with pytest.raises(ValueError, match=r"shapes \(3, 1\) \(synthetic\) and \(4,\) \(real\)"):
        copying_test(np.zeros((3, 1)), np.ones(4), groups, draws=10, seed=0)
