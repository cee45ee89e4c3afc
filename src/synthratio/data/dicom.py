"""Read OCT B-scans from DICOM files as uint8 grayscale arrays.

A file holds one B-scan (one frame) or a whole volume (NumberOfFrames > 1), every frame a B-scan of the same
patient. `read_frame` decodes one frame without decoding the others (pydicom.pixels.pixel_array with index).

Intensities: 8-bit data is kept as is. 9..16-bit data is scaled by the fixed factor 255 / (2**BitsStored - 1),
rounded: OCT exports store 8-bit data in 16-bit words or true 12/16-bit intensities, and a fixed scale keeps
intensities comparable across scans and patients, which per-image normalisation (min/max stretch) would not.
MONOCHROME1 is inverted so that bright tissue is high. Only uncompressed transfer syntaxes are sure to decode;
a compressed one needs a pydicom decoding plugin, and without it pydicom's message surfaces in a DicomError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import pixel_array

DICOM_SUFFIXES = (".dcm", ".dicom")
GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420", "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT")
# what pydicom raises on files it cannot parse or decode (truncated, no pixel data, no plugin for the syntax)
_PYDICOM_ERRORS = (InvalidDicomError, OSError, EOFError, ValueError, KeyError, AttributeError, RuntimeError)


class DicomError(ValueError):
    """A DICOM file the pipeline cannot read as grayscale B-scans."""


@dataclass(frozen=True)
class DicomHeader:
    """What the pipeline needs before decoding pixels."""

    frames: int  # B-scans in the file (NumberOfFrames, 1 when absent)
    patient_id: str  # PatientID, "" when absent or empty


def is_dicom(path: Path) -> bool:
    """A DICOM suffix (case-insensitive), or the 'DICM' magic at byte 128 for files without one."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(132)[128:] == b"DICM"


def _header_dataset(path: Path) -> Dataset:
    """The dataset without its pixel data; DicomError when it is not DICOM or has no image size."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except _PYDICOM_ERRORS as error:
        raise DicomError(f"{path}: not a readable DICOM file ({type(error).__name__}: {error})") from error
    missing = [name for name in ("Rows", "Columns") if ds.get(name) is None]
    if missing:
        raise DicomError(f"{path}: no {'/'.join(missing)} element; expected a DICOM image (an OCT B-scan)")
    return ds


def _frames(path: Path, ds: Dataset) -> int:
    value = ds.get("NumberOfFrames")
    if value is None or value == "":
        return 1
    if int(value) < 1:
        raise DicomError(f"{path}: NumberOfFrames={value}; expected at least 1")
    return int(value)


def read_header(path: Path) -> DicomHeader:
    """Frames and patient id, read without the pixel data; DicomError naming the file when it is not a DICOM
    image (not DICOM at all, or no Rows/Columns)."""
    ds = _header_dataset(path)
    return DicomHeader(frames=_frames(path, ds), patient_id=str(ds.get("PatientID") or "").strip())


def read_frame(path: Path, frame: int) -> np.ndarray:
    """Frame `frame` (0-based) of the file as a uint8 (rows, cols) array."""
    ds = _header_dataset(path)
    frames = _frames(path, ds)
    if not 0 <= frame < frames:
        raise DicomError(f"{path}: frame {frame} out of range; the file has {frames} frame(s) (0..{frames - 1})")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in GRAYSCALE + COLOUR:
        raise DicomError(f"{path}: PhotometricInterpretation={photometric!r}; expected one of {GRAYSCALE + COLOUR}")
    if ds.get("PixelRepresentation", 0) != 0:
        raise DicomError(f"{path}: signed pixels (PixelRepresentation=1); expected unsigned OCT intensities")
    bits = int(ds.get("BitsStored") or 0)
    if not 1 <= bits <= 16:
        raise DicomError(f"{path}: BitsStored={ds.get('BitsStored')}; expected 1..16")
    try:
        # raw=False: pydicom converts YBR_FULL(_422) to RGB, so a grey YBR image has three equal channels
        # correct_unused_bits: zero the bits above BitsStored (overlays, garbage), which carry no intensity
        pixels = np.asarray(pixel_array(path, index=frame, correct_unused_bits=True))
    except _PYDICOM_ERRORS + (NotImplementedError,) as error:
        raise DicomError(f"{path}: cannot decode frame {frame} ({type(error).__name__}: {error})") from error
    if pixels.ndim == 3:
        if photometric in GRAYSCALE or pixels.shape[2] != 3:
            raise DicomError(f"{path}: pixels of shape {pixels.shape} for {photometric}; expected (rows, cols)")
        if not (np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])):
            raise DicomError(f"{path}: colour image ({photometric} with unequal channels); expected grayscale OCT")
        pixels = pixels[..., 0]
    if pixels.ndim != 2:
        raise DicomError(f"{path}: frame {frame} has shape {pixels.shape}; expected (rows, cols)")
    top = 2**bits - 1
    values = pixels.astype(np.int64)
    if photometric == "MONOCHROME1":
        values = top - values
    if bits <= 8:
        return values.astype(np.uint8)
    return np.rint(values * (255.0 / top)).astype(np.uint8)
