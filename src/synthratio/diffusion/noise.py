"""OCT scanner noise: measured in the background (vitreous) of real scans, injected into synthetic ones.

A diffusion model trained on a few hundred small scans tends to smooth away the noise floor that fills the
vitreous of a real B-scan, which makes synthetic scans easy to tell apart. This module measures that noise
and adds noise with the same power spectrum to each generated image.

Noise model. Background patches contain no tissue, so after subtracting each patch's mean what is left is
the scanner's noise floor (detector and shot noise of the interferometer, seen after the log compression of
the display). We model it as *additive, zero-mean, stationary Gaussian* noise with power spectral density
(PSD) S(f): additive because the vitreous returns almost no signal to multiply, stationary because patches
across the vitreous and across scans share one spectrum up to their level (the level is subtracted). It is
a first model: inside tissue, OCT speckle is multiplicative and signal-dependent (Schmitt et al. 1999,
"Speckle in optical coherence tomography", J. Biomed. Opt. 4(1)), which this model does not reproduce; it
restores the missing noise floor and its grain (the axial/lateral correlation encoded in S(f)).

Measurement (Blackman-Tukey, as in Blackman & Tukey 1958, "The measurement of power spectra"): square
background patches at a stride of half a patch (Welch's 50% overlap, Welch 1967), each mean-subtracted;
their linear autocorrelation is computed with zero-padded FFTs and divided by the number of pixel pairs at
each lag (the unbiased estimator), averaged over patches, kept for lags below P/2 in each direction
(rectangular lag window: longer lags rest on few pairs), and Fourier-transformed into the PSD. A
periodogram of the patches (Welch's estimate proper) would be the true spectrum blurred by the patch's
window, and noise synthesised from it would come out less correlated than the real noise (seen on the real
sample at 32 px: a lateral lag-1 correlation of 0.38 measured back as 0.14); the autocorrelation route gives
the correlation at each lag unbiased, so noise synthesised from it measures back the same. Subtracting each
patch's mean removes noise power at scales beyond the patch, where noise and the slowly varying background
cannot be told apart.

Injection: Gaussian white noise, coloured by sqrt(PSD) in the Fourier domain (the spectral method for
stationary Gaussian fields, e.g. Shinozuka & Deodatis 1991, Appl. Mech. Rev. 44(4)), at the image's size.
The P x P spectrum is resampled to the image's H x W frequency grid by Fourier interpolation: its
autocorrelation (lags below P/2) is placed on the H x W lag grid, zero elsewhere, and transformed back; the
noise has the measured correlation at every measured lag and none beyond. Tiling P x P noise patches
instead would put seams every P pixels, a structure real scans do not have. Negative lobes of the truncated
spectrum are clipped to zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from synthratio.data.kermany import WEDGE_LEVEL

# Seed-stream tag ("noise" in ASCII): the injector's generator never shares a stream with the diffusion seed.
NOISE_STREAM = 0x6E6F697365
MIN_PATCH = 4  # px; smaller patches resolve no spectrum
MIN_CONTRAST = 40.0  # grey levels above the background that make a row "strongly reflective" (tissue)


class NoBackgroundError(ValueError):
    """No background patch could be found in the scans searched."""


@dataclass(frozen=True)
class NoiseProfile:
    """Power spectrum and level of background noise measured at one image size.

    psd: (P, P) float64, numpy FFT layout (zero frequency at [0, 0]), in grey levels squared; its mean over
    frequencies is the noise variance (up to clipped negative lobes). std: the noise std in grey levels (the
    square root of the lag-0 autocovariance). patches: how many background patches were measured.
    """

    psd: np.ndarray
    std: float
    patch_size: int
    patches: int

    def __post_init__(self) -> None:
        psd = np.asarray(self.psd, dtype=np.float64)
        if psd.shape != (self.patch_size, self.patch_size):
            raise ValueError(f"NoiseProfile.psd has shape {psd.shape}; expected ({self.patch_size}, {self.patch_size})")
        if not np.all(np.isfinite(psd)) or psd.min() < 0 or psd.sum() <= 0:
            raise ValueError("NoiseProfile.psd must be finite, >= 0 and not all zero")
        if not self.std > 0:
            raise ValueError(f"NoiseProfile.std={self.std!r}; expected a positive std in grey levels")
        object.__setattr__(self, "psd", psd)

    def autocorrelation(self) -> np.ndarray:
        """Normalised autocorrelation (1 at lag 0), FFT layout: [1, 0] is the axial (row) lag-1 correlation,
        [0, 1] the lateral one (Wiener-Khinchin theorem)."""
        acf = np.fft.ifft2(self.psd).real
        return acf / acf[0, 0]

    def to_dict(self) -> dict:
        """The profile as JSON-ready values (PSD rounded to 6 decimals): what the generate stage records among
        the settings a resumed run must match."""
        return {
            "patch_size": self.patch_size,
            "patches": self.patches,
            "std": self.std,
            "psd": np.round(self.psd, 6).tolist(),
        }


def default_patch_size(image_size: int) -> int:
    """Patch side for an image of `image_size` px: an eighth of it (the vitreous spans about a fifth to a
    third of a B-scan's height), at least MIN_PATCH."""
    return max(MIN_PATCH, image_size // 8)


def background_mask(image: np.ndarray, patch_size: int) -> np.ndarray:
    """Boolean (H, W) mask of background pixels: above the tissue of their column, not wedge fill or white.

    Per column, tissue starts at the first row of the lightly smoothed image brighter than the dark floor
    (its 10th percentile, the vitreous and deep choroid) by MIN_CONTRAST grey levels: the RNFL, the first
    strongly reflective layer under the vitreous (about 100 levels above the floor in the real sample; the
    smoothed noise floor varies by a few). Where no column has tissue (a blank frame) every row is background.
    Otherwise a column without tissue (a shadow) takes the highest tissue row of the scan, and each column
    the highest of its neighbours within patch_size columns, so that a dim stretch of retina never counts as
    vitreous. Pixels within patch_size // 2 rows of the tissue are left out (the ILM's blur, the posterior
    hyaloid). Flat pixels (a constant 3x3 neighbourhood: wedges that ingest.mask_wedges filled with one
    level) and near-white ones (wedges, saturated slivers) are left out with a 2 px border (the resize's ringing).
    """
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"image of shape {image.shape} and dtype {image.dtype}; expected a 2-D uint8 array")
    height, width = image.shape
    white = image >= WEDGE_LEVEL  # registration wedges and saturated slivers: never noise
    pixels = image.astype(np.float32)
    pixels[white] = np.median(pixels[~white]) if not white.all() else 0.0  # white is never tissue
    smooth = ndimage.gaussian_filter(pixels, max(1.0, height / 64))
    tissue = smooth > float(np.percentile(smooth, 10)) + MIN_CONTRAST
    found = tissue.any(axis=0)
    top = np.where(found, tissue.argmax(axis=0), height)
    if found.any():
        top = np.where(found, top, top[found].min())
        top = ndimage.minimum_filter1d(top, 2 * patch_size + 1, mode="nearest")
    mask = np.arange(height)[:, None] < (top - max(1, patch_size // 2))[None, :]
    flat = ndimage.maximum_filter(image, 3) == ndimage.minimum_filter(image, 3)
    excluded = ndimage.binary_dilation(flat | white, np.ones((3, 3), bool), iterations=2)
    return mask & ~excluded


def background_patches(image: np.ndarray, patch_size: int) -> np.ndarray:
    """(n, P, P) float64 patches lying wholly in the background, at a stride of P // 2 (Welch's overlap)."""
    if patch_size < MIN_PATCH or patch_size > min(image.shape):
        raise ValueError(
            f"patch_size={patch_size}; expected {MIN_PATCH}..{min(image.shape)} px for an image of shape {image.shape}"
        )
    stride = max(1, patch_size // 2)
    mask = background_mask(image, patch_size)
    view = np.lib.stride_tricks.sliding_window_view
    inside = view(mask, (patch_size, patch_size))[::stride, ::stride].all(axis=(-2, -1))
    patches = view(image, (patch_size, patch_size))[::stride, ::stride][inside]
    return patches.astype(np.float64)


def _lag_products(patches: np.ndarray) -> np.ndarray:
    """Sum over patches of the linear autocorrelation, (2P, 2P) in FFT lag layout (zero padding to 2P
    keeps the circular correlation from wrapping)."""
    size = 2 * patches.shape[-1]
    spectrum = np.fft.rfft2(patches, s=(size, size))
    return np.fft.irfft2((np.abs(spectrum) ** 2).sum(axis=0), s=(size, size))


def patch_autocorrelation(patches: np.ndarray, support: int) -> np.ndarray:
    """Autocovariance of the noise in (n, P, P) patches, (2P, 2P) FFT lag layout, grey levels^2, assumed
    zero at lags of `support` or more.

    Each patch's mean is subtracted and the lag products divided by the number of pixel pairs at each lag.
    The estimated mean lowers every lag by about var(mean) = sum_k n_k r(k) / N^2 (n_k pairs at lag k,
    N pixels; Priestley 1981, "Spectral Analysis and Time Series", sec. 5.3); that is added back, solved in
    closed form over the support, so that noise synthesised from the result measures back the same.
    """
    centred = patches - patches.mean(axis=(-2, -1), keepdims=True)
    pairs = np.rint(_lag_products(np.ones((1, *patches.shape[1:]))))
    acf = _lag_products(centred) / (len(patches) * np.maximum(pairs, 1))
    lags = np.arange(-support + 1, support) % len(acf)
    inside = np.ix_(lags, lags)
    share = pairs[inside] / patches[0].size ** 2
    bias = float((acf[inside] * share).sum() / (1.0 - share.sum()))
    return acf + bias


def _spectrum(acf: np.ndarray, support: int, shape: tuple[int, int]) -> np.ndarray:
    """PSD on an (H, W) grid of the autocovariance `acf` (FFT lag layout, any period >= 2 * support - 1)
    kept at lags |k| < support in each direction and zero elsewhere; negative lobes clipped."""
    lags = np.arange(-support + 1, support)
    rows, cols = np.ix_(lags % acf.shape[0], lags % acf.shape[1])
    placed = np.zeros(shape)
    placed[np.ix_(lags % shape[0], lags % shape[1])] = acf[rows, cols]
    return np.clip(np.fft.fft2(placed).real, 0.0, None)


def measure_noise(images: Iterable[np.ndarray], patch_size: int | None = None) -> NoiseProfile:
    """Noise profile of the background patches of uint8 (H, W) scans, all of one size.

    patch_size defaults to default_patch_size(min(H, W)). Raises NoBackgroundError naming how many scans
    were searched when none has a background patch.
    """
    found: list[np.ndarray] = []
    scans = 0
    shape = None
    for image in images:
        image = np.asarray(image)
        if shape is None:
            shape = image.shape
            patch_size = patch_size or default_patch_size(min(shape))
        elif image.shape != shape:
            raise ValueError(f"scan {scans} has shape {image.shape}; expected every scan at {shape}")
        found.append(background_patches(image, patch_size))
        scans += 1
    if scans == 0:
        raise ValueError("measure_noise() got no scans")
    patches = np.concatenate(found)
    if len(patches) == 0:
        raise NoBackgroundError(
            f"no background patch of {patch_size}x{patch_size} px found in {scans} scans of {shape[0]}x{shape[1]} px "
            f"searched (background: rows above the first row {MIN_CONTRAST:g}+ grey levels brighter than the floor); "
            "are these OCT B-scans with vitreous in view?"
        )
    acf = patch_autocorrelation(patches, patch_size // 2)
    return NoiseProfile(
        psd=_spectrum(acf, patch_size // 2, (patch_size, patch_size)),
        std=float(np.sqrt(acf[0, 0])),
        patch_size=int(patch_size),
        patches=len(patches),
    )


def psd_at(profile: NoiseProfile, shape: tuple[int, int]) -> np.ndarray:
    """The profile's PSD Fourier-interpolated to an (H, W) grid: same autocorrelation at lags below P/2."""
    acf = np.fft.ifft2(profile.psd).real
    return _spectrum(acf, profile.patch_size // 2, shape)


def coloured_noise(profile: NoiseProfile, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Zero-mean Gaussian field of expected variance 1 whose spectrum has the profile's shape."""
    amplitude = np.sqrt(psd_at(profile, shape))
    white = rng.standard_normal(shape)
    field = np.fft.ifft2(np.fft.fft2(white) * amplitude).real
    # white noise of unit variance coloured by A has variance mean(A^2) (Parseval)
    return field / np.sqrt(float((amplitude**2).mean()))


def make_noise_injector(profile: NoiseProfile, strength: float) -> Callable[[np.ndarray, int], np.ndarray]:
    """A postprocess(image, seed) for generate: adds noise of std strength * profile.std to a uint8 (H, W)
    image, drawn from np.random.default_rng([seed, NOISE_STREAM]) (the same seed gives the same noise,
    independent of the diffusion model's own noise), rounded and clipped to uint8. strength 0: unchanged."""
    if not strength >= 0:
        raise ValueError(f"noise strength={strength!r}; expected a multiple >= 0 of the measured noise std")
    scale = strength * profile.std

    def inject(image: np.ndarray, seed: int) -> np.ndarray:
        if image.ndim != 2 or image.dtype != np.uint8:
            raise ValueError(f"image of shape {image.shape} and dtype {image.dtype}; expected a 2-D uint8 array")
        if scale == 0:
            return image
        noise = coloured_noise(profile, image.shape, np.random.default_rng([seed, NOISE_STREAM]))
        return np.clip(np.rint(image + scale * noise), 0, 255).astype(np.uint8)

    return inject
