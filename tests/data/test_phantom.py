import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from synthratio.config import PhantomConfig
from synthratio.data.calibration import CALIBRATION_FILE, measure
from synthratio.data.ingest import detect_wedges
from synthratio.data.phantom import render_scan, write_phantom

NAME = re.compile(r"^(CNV|NORMAL)-(\d{6,7})-(\d+)\.jpeg$")


def _config(seed: int = 0) -> PhantomConfig:
    return PhantomConfig(
        seed=seed,
        patients={"train": 3, "val": 1, "test": 2},
        scans_per_patient=2,
        widths=(64,),
        height=62,
        classes=("CNV", "NORMAL"),
    )


def _has_wedge(scan: np.ndarray) -> bool:
    """A registration wedge, as ingest finds it: a white region touching a corner."""
    return bool(detect_wedges(scan).any())


@pytest.mark.parametrize("label", ["CNV", "NORMAL"])
def test_render_shape_and_dtype(label: str) -> None:
    scan = render_scan(np.random.default_rng(0), label, width=96, height=80)
    assert scan.shape == (80, 96)
    assert scan.dtype == np.uint8
    assert scan.std() > 5  # not blank


def test_render_is_deterministic_per_seed() -> None:
    first = render_scan(np.random.default_rng(7), "CNV", width=64, height=62)
    again = render_scan(np.random.default_rng(7), "CNV", width=64, height=62)
    other = render_scan(np.random.default_rng(8), "CNV", width=64, height=62)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_render_rejects_unknown_label() -> None:
    with pytest.raises(ValueError, match="DME"):
        render_scan(np.random.default_rng(0), "DME", width=64, height=62)


def test_write_phantom_layout_and_ids(tmp_path: Path) -> None:
    config = _config()
    counts = write_phantom(tmp_path / "raw", config)
    assert counts == {split: {"CNV": n * 2, "NORMAL": n * 2} for split, n in config.patients.items()}
    assert not [p for p in tmp_path.iterdir() if p.name != "raw"]  # no temporary folder left behind
    owner: dict[str, tuple[str, str]] = {}
    for split, per_class in counts.items():
        for label, count in per_class.items():
            files = sorted((tmp_path / "raw" / split / label).iterdir())
            assert len(files) == count
            for path in files:
                match = NAME.match(path.name)
                assert match and match.group(1) == label, path.name
                # a patient id belongs to one (split, class): no leak across splits, one eye per patient
                assert owner.setdefault(match.group(2), (split, label)) == (split, label)
                with Image.open(path) as image:
                    assert image.mode == "L" and image.size[1] == config.height and image.size[0] in config.widths
    assert len(owner) == sum(config.patients.values()) * len(config.classes)


def test_write_phantom_is_byte_identical_and_seeded(tmp_path: Path) -> None:
    write_phantom(tmp_path / "a", _config())
    write_phantom(tmp_path / "b", _config())
    write_phantom(tmp_path / "c", _config(seed=1))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpeg"))
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.jpeg"))
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert files != sorted(p.relative_to(tmp_path / "c") for p in (tmp_path / "c").rglob("*.jpeg"))


def test_patient_scans_are_correlated(tmp_path: Path) -> None:
    """Scans of one eye resemble each other more than scans of different eyes."""
    config = PhantomConfig(
        seed=3, patients={"train": 4}, scans_per_patient=2, widths=(128,), height=124, classes=("NORMAL",)
    )
    write_phantom(tmp_path / "raw", config)
    scans: dict[str, list[np.ndarray]] = {}
    for path in sorted((tmp_path / "raw" / "train" / "NORMAL").iterdir()):
        scans.setdefault(path.name.split("-")[1], []).append(np.asarray(Image.open(path), dtype=np.float32))

    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(ndimage.gaussian_filter(a - b, 4)).mean())

    eyes = list(scans.values())
    within = np.mean([distance(*eye) for eye in eyes])
    between = np.mean([distance(eyes[i][0], eyes[i + 1][0]) for i in range(len(eyes) - 1)])
    assert within < 0.5 * between


def test_write_phantom_refuses_non_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="raw"):
        write_phantom(out, _config())
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_write_phantom_fills_an_empty_folder(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    out.mkdir()
    write_phantom(out, _config())
    assert sorted(p.name for p in out.iterdir()) == ["test", "train", "val"]


def _rpe_elevation(scan: np.ndarray) -> float:
    """How far the RPE (the deepest row near the column's brightest) rises above a smooth curve through it, in px.
    Columns with white registration fill are left out: the shift that made it bends the RPE line there."""
    smooth = ndimage.gaussian_filter(np.where(scan >= 250, 0, scan).astype(np.float32), (1, 6))
    bright = smooth >= 0.8 * smooth.max(axis=0)
    rows = ndimage.median_filter(scan.shape[0] - 1 - np.argmax(bright[::-1], axis=0), 9)
    x = np.arange(rows.size)
    clear = ~ndimage.binary_dilation((scan >= 250).any(axis=0), iterations=8)
    if clear.sum() < rows.size // 3:
        clear[:] = True
    trend = np.polyval(np.polyfit(x[clear], rows[clear], 2), x[clear])
    return float(np.percentile(trend - rows[clear], 95))


def test_cnv_scans_show_rpe_elevation() -> None:
    rng = np.random.default_rng(11)
    cnv = np.array([_rpe_elevation(render_scan(rng, "CNV", width=256, height=248)) for _ in range(30)])
    normal = np.array([_rpe_elevation(render_scan(rng, "NORMAL", width=256, height=248)) for _ in range(30)])
    assert np.median(cnv) > 1.8 * np.median(normal)
    # most CNV scans stand out, but not all: some lesions are meant to be subtle
    assert 0.5 < np.mean(cnv > np.percentile(normal, 90)) < 0.95


def test_wedges_are_common_and_class_independent() -> None:
    """About 77% of real scans of either class have a wedge (phantom_calibration.json). 150 scans a class:
    a rate's binomial sd is ~0.035, so the bounds sit ~3 sd away."""
    rng = np.random.default_rng(5)
    rates = {
        label: np.mean([_has_wedge(render_scan(rng, label, width=256, height=248)) for _ in range(150)])
        for label in ("CNV", "NORMAL")
    }
    assert all(0.62 <= rate <= 0.92 for rate in rates.values()), rates
    assert abs(rates["CNV"] - rates["NORMAL"]) < 0.15, rates


@pytest.mark.parametrize("label", ["CNV", "NORMAL"])
def test_statistics_match_calibration(label: str) -> None:
    """Region intensities, speckle, thickness, curvature and wedges of 80 phantom scans at the real size lie
    within the stated tolerances of the numbers measured on the real sample (phantom_calibration.json)."""
    # the numbers measured on the real sample: {"CNV": {...}, "NORMAL": {...}, "tolerance": {...}, "size": [w, h]}
    calibration = json.loads(resources.files("synthratio.data").joinpath(CALIBRATION_FILE).read_text())
    width, height = calibration["size"]
    rng = np.random.default_rng(100 + len(label))
    phantom = measure(render_scan(rng, label, width=width, height=height) for _ in range(80))
    real = calibration[label]
    off = {
        key: (round(real[key], 3), round(phantom[key], 3), tol)
        for key, tol in calibration["tolerance"].items()
        if not abs(real[key] - phantom[key]) <= tol
    }
    assert not off, off  # key: (real, phantom, tolerance)


def test_intensity_percentiles_match_real_sample(kermany_sample: Path) -> None:
    """Whole-image percentiles of scans without wedges, phantom against the real sample (absolute grey levels).

    Region-wise statistics are checked against phantom_calibration.json in test_statistics_match_calibration.
    """
    levels = [5, 50, 95, 99]
    tolerance = np.array([5, 10, 20, 35])
    real = []
    for label in ("CNV", "NORMAL"):
        for path in sorted((kermany_sample / label).glob("*.jpeg"))[:40]:
            scan = np.asarray(Image.open(path).convert("L"))
            if not _has_wedge(scan):
                real.append(np.percentile(scan, levels))
    rng = np.random.default_rng(0)
    scans = (render_scan(rng, label, width=512, height=496) for label in ("CNV", "NORMAL") for _ in range(20))
    phantom = [np.percentile(scan, levels) for scan in scans if not _has_wedge(scan)]
    real_mean, phantom_mean = np.mean(real, axis=0), np.mean(phantom, axis=0)
    assert np.all(np.abs(real_mean - phantom_mean) <= tolerance), (real_mean.round(1), phantom_mean.round(1))


def test_widths_are_drawn_per_patient_for_both_classes(tmp_path: Path):
    config = PhantomConfig(
        seed=5, patients={"train": 12}, scans_per_patient=2, widths=(64, 96), height=62, classes=("CNV", "NORMAL")
    )
    write_phantom(tmp_path / "raw", config)
    for label in config.classes:
        sizes: dict[str, set[int]] = {}
        for path in (tmp_path / "raw" / "train" / label).iterdir():
            with Image.open(path) as image:
                sizes.setdefault(path.name.split("-")[1], set()).add(image.size[0])
        assert all(len(widths) == 1 for widths in sizes.values())  # one eye, one width
        assert set().union(*sizes.values()) == {64, 96}
