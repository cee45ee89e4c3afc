"""Procedural OCT B-scan phantom: the embedded default data set when no real scans are available.

A scan is built the way a Spectralis B-scan looks after log compression: a layered retina (bright RNFL,
dark nuclear layers, very bright ellipsoid zone and RPE) over a choroid that fades into darkness, a foveal
pit, vessel shadows, multiplicative correlated speckle, and an additive noise floor that fills the vitreous.
CNV eyes add an irregular hyper-reflective RPE elevation over lesion material, sub-retinal fluid,
intra-retinal cysts and retinal thickening, with a severity that runs from barely visible to gross.

Lengths are drawn in pixels of a 496-row Spectralis scan (scaled to the requested height) and in fractions
of the width horizontally. Levels, speckle, thickness, curvature and registration wedges are calibrated
against the real Kermany sample: calibration.measure reduces scans to statistics, phantom_calibration.json
holds the real ones, and tests/data/test_phantom.py checks the phantom against them within stated tolerances.
A patient is one eye: its scans share geometry, lesion and vessels and differ like neighbouring B-scans (a
small shift and a different cut through the lesion).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from synthratio.config import PhantomConfig
from synthratio.data.kermany import REFERENCE_HEIGHT, SPLITS
from synthratio.runtime import progress_bar

LESION_SEVERITY_FLOOR = 0.3  # the mildest CNV lesion's severity (0..1): sets how hard CNV vs NORMAL is
LABELS = ("CNV", "NORMAL")  # fixed codes for seeding: dropping a class never changes the other's scans
# Registration wedges: Kermany's scans were shifted column by column (flattening, registration) and the
# rows shifted in from outside filled with white. ~77% of real scans of either class have one (measured with
# ingest.detect_wedges on the sample, phantom_calibration.json); drawn per scan, independent of the class.
WEDGE_PROBABILITY = 0.77
WEDGE_SCALE = (0.04, 0.9)  # median and log-sd of the displacement scale, fraction of the height

# Regions from top to bottom; region k lies below boundary k-1. Levels are display intensities before
# speckle and the noise floor (which adds about 20), tuned to the real sample's RPE-aligned profile.
REGIONS = (
    "vitreous",
    "rnfl",
    "gcl",
    "ipl",
    "inl",
    "opl",
    "onl",
    "elm",
    "myoid",
    "ellipsoid",
    "os",
    "srf",
    "rpe",
    "lesion",
    "choroid",
)
LEVELS = np.array([0, 108, 65, 68, 42, 63, 34, 63, 50, 122, 90, 0, 153, 0, 0], dtype=np.float32)
LESION = REGIONS.index("lesion")  # level drawn per eye
CHOROID = REGIONS.index("choroid")  # level fades with depth, drawn per scan
RPE_THICKNESS = 7.0  # reference px, RPE with Bruch's membrane


@dataclass(frozen=True)
class Wiggle:
    """A smooth random curve on [0, 1]: a few low-frequency sines, so one eye keeps it at any width."""

    freqs: np.ndarray
    amps: np.ndarray
    phases: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, cycles: float) -> Wiggle:
        """Unit-RMS curve with detail up to `cycles` periods across the scan."""
        freqs = rng.uniform(0.5, cycles, 6)
        amps = rng.normal(0.0, 1.0, 6) / np.sqrt(3.0)
        return cls(freqs, amps, rng.uniform(0.0, 2 * np.pi, 6))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.sin(2 * np.pi * self.freqs * x[:, None] + self.phases) @ self.amps


@dataclass(frozen=True)
class Lesion:
    """A CNV lesion of one eye; heights in reference px, positions and widths in fractions of the width."""

    severity: float  # 0 (subtle) .. 1 (gross)
    x: float  # centre
    z: float  # position along the slow axis, in units of the lesion radius
    height: float  # RPE elevation at the centre
    width: float  # half-width of the elevation
    sharpness: float  # exponent of the dome: 2 Gaussian .. 3.5 flat-topped
    fill: float  # level of the material under the elevated RPE (fibrovascular bright, serous dark)
    irregular: Wiggle
    srf_height: float  # sub-retinal fluid thickness at its centre, 0 when absent
    srf_x: float
    srf_width: float
    thickening: float  # relative retinal thickening over the lesion
    cysts: np.ndarray  # (n, 4): x offset from the lesion, depth in INL..ONL (0..1), radius x (width), radius y (px)


@dataclass(frozen=True)
class Eye:
    """The anatomy one patient's scans share."""

    bm_row: float  # Bruch's membrane at the centre, fraction of the height
    tilt: float  # rise across the scan, fraction of the height
    curvature: float  # how much the edges rise above the centre, fraction of the height
    shape: Wiggle  # slow undulation of the whole retina
    thickness: float  # scale of all retinal layers
    thickness_wiggle: Wiggle
    fovea_x: float
    fovea_width: float  # Gaussian sigma of the pit, fraction of the width
    fovea_depth: float  # share of the inner layers removed at the pit's centre
    rnfl_side: float  # +1/-1: the nasal side, where the RNFL thickens
    gain: Wiggle  # reflectivity along the scan
    vessels: np.ndarray  # (n, 3): x, width (fraction), shadow strength
    choroid_depth: float  # decay length of the choroid signal, px
    lesion: Lesion | None
    wedge: np.ndarray | None = None  # (scale, offset, slope, bend) of the registration shift, None: no wedges


def _draw_lesion(rng: np.random.Generator, fovea_x: float) -> Lesion:
    # Beta(1, 1.6) above a floor: many mild lesions keep CNV vs NORMAL from being trivial, none so faint
    # that 32 px hides it (a floor of 0 made the phantom far harder than real scans: simple_cnn 0.80 against
    # the real sample's 0.98, and seeds that disagreed by points; a floor of 0.3 gives 0.94, seeds within 0.3
    # points, and CNV retina thickness still within its calibration tolerance, which 0.4 leaves).
    severity = LESION_SEVERITY_FLOOR + (1 - LESION_SEVERITY_FLOOR) * float(rng.beta(1.0, 1.6))
    width = (0.04 + 0.14 * severity) * rng.uniform(0.7, 1.4)
    x = float(np.clip(fovea_x + rng.normal(0.0, 0.08), 0.2, 0.8))
    has_srf = rng.random() < 0.15 + 0.8 * severity
    has_irf = rng.random() < 0.1 + 0.8 * severity
    n_cysts = int(rng.poisson(2 + 14 * severity)) if has_irf else 0
    cysts = np.column_stack(
        [
            rng.normal(0.0, 1.2 * width, n_cysts),
            rng.uniform(0.15, 0.85, n_cysts),
            rng.uniform(0.004, 0.012 + 0.02 * severity, n_cysts),
            rng.uniform(2.5, 5.0 + 30.0 * severity**2, n_cysts),
        ]
    )
    return Lesion(
        severity=severity,
        x=x,
        z=float(rng.uniform(-0.3, 0.3)),
        height=3.0 + 75.0 * severity**1.3 * rng.uniform(0.6, 1.2),
        width=width,
        sharpness=float(rng.uniform(2.0, 3.5)),
        fill=float(rng.choice([rng.uniform(70, 140), rng.uniform(10, 40)], p=[0.8, 0.2])),
        irregular=Wiggle.draw(rng, 8.0),
        srf_height=float(rng.uniform(4.0, 8.0 + 40.0 * severity)) if has_srf else 0.0,
        srf_x=x + float(rng.normal(0.0, 0.5 * width)),
        srf_width=width * float(rng.uniform(0.6, 1.6)),
        thickening=float(severity * rng.uniform(0.1, 0.6)),
        cysts=cysts,
    )


def _draw_eye(rng: np.random.Generator, label: str) -> Eye:
    if label not in LABELS:
        raise ValueError(f"label={label!r}; expected one of {list(LABELS)}")
    fovea_x = float(rng.normal(0.5, 0.06))
    n_vessels = int(rng.integers(2, 8))
    vessels = np.column_stack(
        [
            rng.uniform(0.03, 0.97, n_vessels),
            rng.uniform(0.003, 0.008, n_vessels),
            rng.uniform(0.2, 0.6, n_vessels),
        ]
    )
    lesion = _draw_lesion(rng, fovea_x) if label == "CNV" else None
    bm_row = float(rng.uniform(0.36, 0.64))
    if lesion is not None:  # a tall lesion sits lower, so that the retina above it stays in the scan
        bm_row = max(bm_row, (lesion.height * 1.3 + lesion.srf_height + 150) / REFERENCE_HEIGHT)
    return Eye(
        bm_row=bm_row,
        tilt=float(rng.normal(0.0, 0.06)),
        curvature=float(rng.uniform(-0.02, 0.2)),
        shape=Wiggle.draw(rng, 2.0),
        thickness=float(rng.uniform(0.75, 1.0)),
        thickness_wiggle=Wiggle.draw(rng, 3.0),
        fovea_x=fovea_x,
        fovea_width=float(rng.uniform(0.045, 0.08)),
        fovea_depth=float(rng.uniform(0.65, 0.95)),
        rnfl_side=float(rng.choice([-1.0, 1.0])),
        gain=Wiggle.draw(rng, 2.0),
        vessels=vessels,
        choroid_depth=float(rng.uniform(40.0, 65.0)),
        lesion=lesion,
        wedge=_draw_wedge(rng) if rng.random() < WEDGE_PROBABILITY else None,
    )


def _draw_wedge(rng: np.random.Generator) -> np.ndarray:
    """Registration shift of one eye's volume: its B-scans share it, each with a small jitter."""
    scale = WEDGE_SCALE[0] * np.exp(WEDGE_SCALE[1] * rng.standard_normal())
    return np.array(
        [scale, rng.normal(-0.3, 1.0), rng.normal(0.0, 2.0), rng.normal(0.0, 6.0)]
    )  # mostly up: white below


def _upsample(field: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Linear interpolation to `shape`, one axis at a time (cheaper than ndimage.zoom, no BLAS threads)."""
    for axis, n_out in enumerate(shape):
        n_in = field.shape[axis]
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.minimum(pos.astype(int), max(n_in - 2, 0))
        hi = np.minimum(lo + 1, n_in - 1)
        frac = (pos - lo).astype(np.float32)
        frac = frac[:, None] if axis == 0 else frac
        field = np.take(field, lo, axis) * (1 - frac) + np.take(field, hi, axis) * frac
    return field


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float], coarse: int = 1) -> np.ndarray:
    """Unit-variance Gaussian noise correlated over `sigma` px, drawn `coarse` times smaller and upsampled."""
    small = (-(-shape[0] // coarse), -(-shape[1] // coarse))
    field = ndimage.gaussian_filter(
        rng.standard_normal(small, dtype=np.float32), (sigma[0] / coarse, sigma[1] / coarse)
    )
    if coarse > 1:
        field = _upsample(field, shape)
    return field / max(float(field.std()), 1e-6)


def _boundaries(eye: Eye, x: np.ndarray, height: int, slice_z: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the region boundaries (len(REGIONS) - 1, width) in px, and the lesion's elevation per column."""
    u = height / REFERENCE_HEIGHT
    c = x - 0.5
    bm = height * (eye.bm_row + eye.tilt * c - eye.curvature * 4 * c**2 + 0.01 * eye.shape(x))
    bm = bm + 0.8 * u * eye.shape(3 * x)  # faint RPE undulation, in NORMAL eyes too

    # A neighbouring B-scan cuts the pit off-centre: shallower the farther it lies.
    pit = eye.fovea_depth * np.exp(-0.5 * ((x - eye.fovea_x) / eye.fovea_width) ** 2) * np.exp(-((slice_z / 0.6) ** 2))
    scale = eye.thickness * (1 + 0.05 * eye.thickness_wiggle(x))
    ped = np.zeros_like(x)
    srf = np.zeros_like(x)
    lesion = eye.lesion
    if lesion is not None:
        # Cutting a dome off its centre gives a lower, narrower section.
        cut = np.sqrt(max(0.15, 1.0 - (slice_z - lesion.z) ** 2))
        d = np.abs(x - lesion.x) / (lesion.width * cut)
        dome = np.exp(-(d**lesion.sharpness)) * (1 + 0.3 * lesion.irregular(x))
        ped = np.clip(lesion.height * cut * dome, 0.0, None)
        srf = lesion.srf_height * cut * np.exp(-0.5 * ((x - lesion.srf_x) / lesion.srf_width) ** 2)
        near = np.exp(-0.5 * ((x - lesion.x) / (2 * lesion.width)) ** 2)
        scale = scale * (1 + lesion.thickening * cut * near)
        pit = pit * (1 - min(1.0, 1.5 * lesion.severity) * near)  # a lesion fills the foveal contour

    inner = scale * (1 - pit)
    rnfl = scale * (5.0 + 10.0 * np.clip(eye.rnfl_side * (x - eye.fovea_x) * 3, 0, 1)) * (1 - pit)
    # thickness (reference px) of the regions from the RNFL down to the sub-retinal fluid, top to bottom
    thick = [
        rnfl,
        12.0 * inner,
        9.0 * inner,
        9.0 * inner,
        8.0 * inner,
        scale * 22.0 * (1 + 0.35 * pit),
        np.full_like(x, 1.5),
        5.0 * scale,
        np.full_like(x, 3.0),
        6.0 * scale,
        srf,
    ]
    rpe_top = bm / u - ped - RPE_THICKNESS  # reference px from here up
    rows = [bm / u, bm / u - ped, rpe_top]
    edge = rpe_top
    for t in reversed(thick):
        edge = edge - t
        rows.append(edge)
    return u * np.array(rows[::-1], dtype=np.float32), u * ped


def _render(eye: Eye, rng: np.random.Generator, width: int, height: int, slice_z: float, shift: float) -> np.ndarray:
    u = height / REFERENCE_HEIGHT
    x = (np.arange(width, dtype=np.float64) + 0.5) / width - shift
    rows, ped = _boundaries(eye, x, height, slice_z)
    y = np.arange(height, dtype=np.float32)[:, None]
    region = np.zeros((height, width), dtype=np.int8)
    for boundary in rows:
        region += y >= boundary
    signal = LEVELS[region]

    lesion = eye.lesion
    if lesion is not None:
        # Lesion material: heterogeneous, with clumps.
        clumps = 1 + 0.35 * _noise(rng, (height, width), (3 * u, 6 * u), coarse=2)
        signal = np.where(region == LESION, lesion.fill * clumps, signal)
        _carve_cysts(signal, region, rows, lesion, x, u, slice_z)

    # Choroid: bright under the RPE, fading with depth, with dark vessel lumens; shadowed under a lesion.
    depth = np.clip(y - rows[-1], 0, None)
    lumens = _noise(rng, (height, width), (4 * u, 7 * u), coarse=4)
    choroid = 115 * np.exp(-depth / (eye.choroid_depth * u)) * (1 - 0.55 / (1 + np.exp(-4 * (lumens - 0.5))))
    under_lesion = 1 - 0.6 * np.clip(ped / (25 * u), 0, 1)
    signal = np.where(region == CHOROID, choroid * under_lesion, signal)

    signal = ndimage.gaussian_filter(signal, (0.7 * u, 1.0))  # the axial and lateral resolution
    signal *= 1 + 0.05 * _noise(rng, (height, width), (1.5 * u, 8 * u), coarse=2)  # streaky layer texture
    signal *= (1 + 0.12 * eye.gain(x)).astype(np.float32)
    _add_vessels(signal, eye, rows, x, y, u)

    # Speckle: multiplicative, correlated over a speckle grain (log-normal, mean 1).
    speckle = np.exp(0.1 * _noise(rng, (height, width), (0.8 * u, 2.0)) - 0.1**2 / 2)
    floor = rng.uniform(22.0, 34.0) * (1 - 0.7 * y / height)  # the noise floor is darker at depth, as in the sample
    noise = floor * (1 + 0.65 * _noise(rng, (height, width), (0.75 * u, 0.65)) / (1 + signal / 50))
    image = signal * speckle * rng.uniform(0.85, 1.15) + noise
    if eye.wedge is not None:
        # registration keeps the retina in view: the inner surface below 4%, Bruch's membrane above 92% of the height
        limits = (0.04 * height - rows[0], 0.92 * height - rows[-2])
        image = _add_wedge(image, eye.wedge + rng.normal(0.0, 1.0, 4) * np.array([0.0, 0.15, 0.3, 0.8]), limits)
    return np.clip(image, 0, 255).astype(np.uint8)


def _carve_cysts(
    signal: np.ndarray, region: np.ndarray, rows: np.ndarray, lesion: Lesion, x: np.ndarray, u: float, slice_z: float
) -> None:
    """Intra-retinal cysts: dark ellipses between the INL and the ONL, fewer and smaller off the lesion's centre."""
    height, width = signal.shape
    cut = max(0.0, 1.0 - (slice_z - lesion.z) ** 2)
    top_row, bottom_row = rows[REGIONS.index("inl") - 1], rows[REGIONS.index("elm") - 1]
    retina = (region >= REGIONS.index("rnfl")) & (region <= REGIONS.index("os"))
    for dx, depth, rx, ry in lesion.cysts:
        col = int(np.argmin(np.abs(x - (lesion.x + dx))))
        rx_px, ry_px = rx * cut * width, ry * cut * u
        if rx_px < 1 or ry_px < 1:
            continue
        cy = top_row[col] + depth * (bottom_row[col] - top_row[col])
        y0, y1 = max(0, int(cy - ry_px)), min(height, int(cy + ry_px) + 2)
        x0, x1 = max(0, int(col - rx_px)), min(width, int(col + rx_px) + 2)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        inside = ((yy - cy) / ry_px) ** 2 + ((xx - col) / rx_px) ** 2 <= 1
        signal[y0:y1, x0:x1][inside & retina[y0:y1, x0:x1]] = 0


def _add_vessels(signal: np.ndarray, eye: Eye, rows: np.ndarray, x: np.ndarray, y: np.ndarray, u: float) -> None:
    """Inner-retinal vessels: a bright spot in the GCL and a dark column (shadow) below it."""
    width = signal.shape[1]
    vessel_rows = rows[REGIONS.index("gcl") - 1]
    for vx, vw, strength in eye.vessels:
        col = int(np.argmin(np.abs(x - vx)))
        half = int(3 * vw * width) + 1
        c0, c1 = max(0, col - half), min(width, col + half + 1)
        if abs(x[col] - vx) > vw or c1 <= c0:
            continue  # shifted out of the scan
        profile = np.exp(-0.5 * ((x[c0:c1] - vx) / vw) ** 2).astype(np.float32)
        top = vessel_rows[col] + 2 * u
        spot = np.exp(-0.5 * ((y - top) / (2.5 * u)) ** 2)
        below = 1 / (1 + np.exp(-np.clip(y - top - 3 * u, -30, 30)))
        patch = signal[:, c0:c1]
        patch += 70 * spot * profile
        patch *= 1 - strength * below * profile


def _add_wedge(image: np.ndarray, wedge: np.ndarray, limits: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Registration wedges: shift each column by a smooth (quadratic) displacement and fill the rows that
    came from outside the scan with white (255): curved white areas along the top and/or bottom edge,
    deepest at a corner, as flattening leaves them in Kermany's scans. The shift per column is clipped to
    `limits` (lowest, highest; px)."""
    height, width = image.shape
    c = (np.arange(width) + 0.5) / width - 0.5
    scale, offset, slope, bend = wedge
    shift = height * scale * (offset + slope * c + bend * (c**2 - 1 / 12))  # + moves the scan down
    shift = np.round(np.clip(shift, limits[0], np.maximum(limits[0], limits[1]))).astype(int)
    src = np.arange(height)[:, None] - shift[None, :]
    inside = (src >= 0) & (src < height)
    out = np.take_along_axis(image, np.clip(src, 0, height - 1), axis=0)
    out[~inside] = 255
    return out


def render_scan(rng: np.random.Generator, label: str, *, width: int, height: int) -> np.ndarray:
    """One grayscale B-scan, uint8 array (height, width). label is 'CNV' or 'NORMAL'."""
    eye = _draw_eye(rng, label)
    return _render(eye, rng, width, height, slice_z=float(rng.uniform(-0.3, 0.3)), shift=float(rng.normal(0, 0.02)))


def _patient_ids(config: PhantomConfig) -> dict[tuple[str, str, int], int]:
    """Unique 6-7 digit ids (like Kermany's CNV-1016042-1.jpeg) for every (split, class, index)."""
    keys = [
        (split, label, i) for split in SPLITS for label in config.classes for i in range(config.patients.get(split, 0))
    ]
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(0,)))
    ids = 100_000 + rng.choice(9_900_000, size=len(keys), replace=False)
    return {key: int(pid) for key, pid in zip(keys, ids)}


def _write_patient(job: tuple[Path, PhantomConfig, str, str, int, int]) -> int:
    """Render and write one patient's scans; the number written."""
    tmp, config, split, label, index, pid = job
    folder = tmp / split / label
    folder.mkdir(parents=True, exist_ok=True)
    seed = np.random.SeedSequence(config.seed, spawn_key=(1, SPLITS.index(split), LABELS.index(label), index))
    rng = np.random.default_rng(seed)
    eye = _draw_eye(rng, label)
    # own stream for the width, so adding widths leaves every other draw of the eye unchanged
    width_rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(2, *seed.spawn_key[1:])))
    width = int(width_rng.choice(config.widths))
    n = config.scans_per_patient
    for j in range(n):
        # Neighbouring B-scans: evenly spaced cuts through the eye, a little shifted sideways.
        slice_z = 0.25 * (j - (n - 1) / 2) + rng.normal(0.0, 0.05)
        scan = _render(eye, rng, width, config.height, slice_z, shift=float(rng.normal(0.0, 0.01)))
        Image.fromarray(scan).save(folder / f"{label}-{pid}-{j + 1}.jpeg", quality=95)
    return n


def write_phantom(out_dir: Path, config: PhantomConfig) -> dict[str, dict[str, int]]:
    """Write the data set in Kermany's layout out_dir/{split}/{CLASS}/{CLASS}-{patient_id}-{n}.jpeg, patients
    rendered in `config.workers` processes.

    Deterministic: each patient's scans come from a generator seeded by (config.seed, split, class, index),
    so they do not change when other splits or classes grow (the ids, drawn for the whole set jointly so that
    they are unique, may) or with the number of processes. Each patient is one eye of one class. Written into
    a temporary sibling folder and renamed into place, so an interrupted run leaves no half data set behind.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir}: exists and is not an empty folder; remove it to write the phantom there")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    ids = _patient_ids(config)
    counts = {split: {label: 0 for label in config.classes} for split in SPLITS if split in config.patients}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        jobs = [(tmp, config, split, label, index, pid) for (split, label, index), pid in ids.items()]
        with ProcessPoolExecutor(max_workers=config.workers or os.cpu_count() or 1) as pool:
            writing = pool.map(_write_patient, jobs, chunksize=8)
            written = progress_bar(writing, total=len(jobs), desc="phantom patients")
            for n, (_, _, split, label, _, _) in zip(written, jobs):  # the bar's iterator first: it ends, and closes
                counts[split][label] += n
        for split, per_class in counts.items():
            for label in per_class:
                (tmp / split / label).mkdir(parents=True, exist_ok=True)
        if out_dir.exists():
            out_dir.rmdir()  # not runtime.replace_folder: that would delete a folder that filled meanwhile
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts
