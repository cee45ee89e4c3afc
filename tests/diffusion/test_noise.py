"""Background noise of OCT scans: measured on phantom and real scans, injected with the same spectrum."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from synthratio.data.ingest import decode_scan, detect_wedges, mask_wedges
from synthratio.data.phantom import render_scan
from synthratio.diffusion.noise import (
    NoBackgroundError,
    NoiseProfile,
    background_mask,
    background_patches,
    make_noise_injector,
    measure_noise,
)

SIZE = 32  # px, the default finetune.image_size
FLAT = 128  # grey level of the canvas noise is injected into: far from 0 and 255, so nothing clips
# A measured spectrum of injected noise must match its target within these (4 images of 128 px,
# ~15,000 patches): what estimation noise and clipped negative lobes leave. White noise is far outside.
MAX_PSD_ERROR = 0.15  # relative L2 distance of the spectra, each normalised to mean 1
MIN_PSD_CORRELATION = 0.95  # Pearson correlation of the spectra over frequency bins
STD_TOLERANCE = 0.10  # relative


def prepared(scan: np.ndarray, size: int) -> np.ndarray:
    """As prepare does it (ingest.decode_scan): wedges masked, the whole scan squeezed to a square (Lanczos)."""
    wedge = detect_wedges(scan)
    scan = mask_wedges(scan, wedge) if wedge.any() else scan
    return np.asarray(Image.fromarray(scan).resize((size, size), Image.Resampling.LANCZOS))


def psd_error(measured: np.ndarray, target: np.ndarray) -> float:
    measured, target = measured / measured.mean(), target / target.mean()
    return float(np.linalg.norm(measured - target) / np.linalg.norm(target))


@pytest.fixture(scope="module")
def phantom_scans() -> list[np.ndarray]:
    """Eight full-size phantom B-scans (496 x 512, both classes) at 32 px."""
    rng = np.random.default_rng(0)
    return [prepared(render_scan(rng, label, width=512, height=496), SIZE) for label in ("CNV", "NORMAL") * 4]


@pytest.fixture(scope="module")
def phantom_profile(phantom_scans) -> NoiseProfile:
    return measure_noise(phantom_scans)


@pytest.fixture(scope="module")
def axial_profile() -> NoiseProfile:
    """Noise correlated along the rows' direction (axially) far more than laterally, on blank frames."""
    rng = np.random.default_rng(1)
    frames = [ndimage.gaussian_filter(rng.standard_normal((64, 64)), (1.5, 0.4)) for _ in range(6)]
    return measure_noise([np.clip(np.rint(FLAT + 40 * f), 0, 255).astype(np.uint8) for f in frames], patch_size=8)


def injected(profile: NoiseProfile, strength: float = 1.0, seeds=range(4), size: int = 128) -> list[np.ndarray]:
    inject = make_noise_injector(profile, strength)
    return [inject(np.full((size, size), FLAT, np.uint8), seed) for seed in seeds]


def test_background_is_the_vitreous_of_phantom_scans(phantom_scans):
    masks = [background_mask(scan, 4) for scan in phantom_scans]
    assert sum(len(background_patches(scan, 4)) > 0 for scan in phantom_scans) >= 7
    for scan, mask in zip(phantom_scans, masks):
        if mask.any():
            # the phantom's vitreous sits at ~25 grey levels, its retina and choroid far above
            assert scan[mask].mean() < 35 < scan[~mask].mean()
            rows = np.nonzero(mask.any(axis=1))[0]
            assert rows.max() < SIZE // 2  # above the retina, never the dark choroid below it


def test_wedge_fill_and_white_slivers_are_not_background(phantom_scans):
    scan = next(scan for scan in phantom_scans if background_mask(scan, 4)[:3].all())
    scan = scan.copy()
    scan[:3, :6] = 25  # a registration wedge that ingest.mask_wedges filled with the background level
    scan[0, 20:24] = 255  # a white sliver too small to be a wedge
    mask = background_mask(scan, 4)
    assert not mask[:3, :7].any()  # the fill and a border (a wedge's edge rings after the resize)
    assert not mask[:3, 18:26].any()  # the sliver with a 2 px border
    assert mask[:3, 10:16].all()  # the vitreous between them is still background


@pytest.mark.parametrize("name", ["phantom", "axial"])
def test_injected_noise_measures_back_the_profile(name, phantom_profile, axial_profile):
    profile = {"phantom": phantom_profile, "axial": axial_profile}[name]
    measured = measure_noise(injected(profile), patch_size=profile.patch_size)
    assert psd_error(measured.psd, profile.psd) < MAX_PSD_ERROR
    assert np.corrcoef(measured.psd.ravel(), profile.psd.ravel())[0, 1] > MIN_PSD_CORRELATION
    assert measured.std == pytest.approx(profile.std, rel=STD_TOLERANCE)
    lag_one = ([1, 0], [0, 1])  # axial and lateral
    np.testing.assert_allclose(measured.autocorrelation()[lag_one], profile.autocorrelation()[lag_one], atol=0.1)
    assert psd_error(np.ones_like(profile.psd), profile.psd) > 2 * MAX_PSD_ERROR  # the tolerance rejects white noise


def test_axial_correlation_is_measured_as_such(axial_profile):
    acf = axial_profile.autocorrelation()
    assert acf[1, 0] > 0.6 > 0.3 > acf[0, 1]  # gaussian_filter sigma 1.5 rows vs 0.4 columns


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
def test_strength_scales_the_std_linearly(phantom_profile, strength):
    noise = np.stack(injected(phantom_profile, strength)).astype(float) - FLAT
    unit = np.stack(injected(phantom_profile, 1.0)).astype(float) - FLAT
    assert noise.std() == pytest.approx(strength * phantom_profile.std, rel=0.05)
    # same seeds: only rounding to grey levels differs, which adds a uniform error of variance 1/12 to each

    def rounded(std: float) -> float:
        return np.sqrt(std**2 + 1 / 12)

    expected = rounded(strength * phantom_profile.std) / rounded(phantom_profile.std)
    assert noise.std() / unit.std() == pytest.approx(expected, rel=0.01)


def test_same_seed_same_image_other_seed_other_image(phantom_profile, phantom_scans):
    inject = make_noise_injector(phantom_profile, 1.0)
    image = phantom_scans[0]
    first, again, other = inject(image, 3), inject(image, 3), inject(image, 4)
    assert first.dtype == np.uint8 and first.shape == image.shape
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other) and not np.array_equal(first, image)


def test_strength_zero_leaves_the_image_unchanged(phantom_profile, phantom_scans):
    np.testing.assert_array_equal(make_noise_injector(phantom_profile, 0.0)(phantom_scans[2], 0), phantom_scans[2])
    with pytest.raises(ValueError, match="strength=-1"):
        make_noise_injector(phantom_profile, -1.0)


def test_no_background_names_the_scans_searched():
    bright_top = np.full((SIZE, SIZE), 20, np.uint8)
    bright_top[:6] = 150  # tissue from the first row: no vitreous in view
    rng = np.random.default_rng(0)
    scans = [np.clip(bright_top + rng.integers(0, 8, bright_top.shape), 0, 255).astype(np.uint8) for _ in range(3)]
    with pytest.raises(NoBackgroundError, match="found in 3 scans"):
        measure_noise(scans)


def test_profile_record_reads_back_equal_from_json(phantom_profile):
    """generate keeps to_dict() among the settings a resumed run must match, compared after a JSON round trip."""
    record = phantom_profile.to_dict()
    assert json.loads(json.dumps(record, indent=1)) == record
    assert (record["std"], record["patch_size"], record["patches"]) == (
        phantom_profile.std,
        phantom_profile.patch_size,
        phantom_profile.patches,
    )
    np.testing.assert_allclose(record["psd"], phantom_profile.psd, atol=1e-6)


@pytest.mark.parametrize("size", [32, 64])
def test_real_sample_noise_is_correlated_and_reproduced(kermany_sample: Path, size: int):
    cnv, normal = (sorted((kermany_sample / name).glob("*.jpeg")) for name in ("CNV", "NORMAL"))
    paths = cnv[:30] + normal[:10]
    scans = [decode_scan(path, (size,), mask=True).resized[size] for path in paths]
    profile = measure_noise(scans)
    with_patches = sum(len(background_patches(scan, profile.patch_size)) > 0 for scan in scans)
    acf = profile.autocorrelation()
    print(
        f"real sample at {size} px: {with_patches}/{len(scans)} scans with background, {profile.patches} patches "
        f"of {profile.patch_size} px, std {profile.std:.2f}, lag-1 correlation axial {acf[1, 0]:.2f} "
        f"lateral {acf[0, 1]:.2f}"
    )
    assert with_patches >= 0.9 * len(scans)
    assert 2.0 < profile.std < 10.0  # grey levels; 4.2 at 32 px and 5.4 at 64 px when written
    assert min(acf[1, 0], acf[0, 1]) > 0.15  # correlated, not white
    measured = measure_noise(injected(profile), patch_size=profile.patch_size)
    assert psd_error(measured.psd, profile.psd) < MAX_PSD_ERROR
    assert measured.std == pytest.approx(profile.std, rel=STD_TOLERANCE)
