import re
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from synthratio.data.dicom import DicomError, DicomHeader, is_dicom, read_frame, read_header

OCT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.5.4"


def write_dicom(
    path: Path, pixels: np.ndarray, *, patient_id: str | None = "P1", bits: int = 8, photometric: str = "MONOCHROME2"
) -> Path:
    """Write `pixels` as an uncompressed DICOM file: (rows, cols) one B-scan, (frames, rows, cols) a volume,
    (rows, cols, 3) one colour frame (photometric RGB). patient_id None leaves PatientID out."""
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2")
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = OCT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    if patient_id is not None:
        ds.PatientID = patient_id
    if pixels.ndim == 3 and not colour:
        ds.NumberOfFrames = pixels.shape[0]
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored, ds.HighBit = bits, bits - 1
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint8 if bits <= 8 else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _scan(seed: int, shape: tuple[int, ...] = (6, 5)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_a_single_b_scan_comes_back_exactly(tmp_path):
    scan = _scan(0)
    path = write_dicom(tmp_path / "scan.dcm", scan, patient_id="P7")
    assert read_header(path) == DicomHeader(frames=1, patient_id="P7")
    frame = read_frame(path, 0)
    assert frame.dtype == np.uint8 and frame.shape == (6, 5)
    np.testing.assert_array_equal(frame, scan)


def test_every_frame_of_a_volume_comes_back_exactly(tmp_path):
    volume = _scan(1, (3, 6, 5))
    path = write_dicom(tmp_path / "volume.DICOM", volume)
    assert read_header(path) == DicomHeader(frames=3, patient_id="P1")
    for index in range(3):
        np.testing.assert_array_equal(read_frame(path, index), volume[index])


@pytest.mark.parametrize(
    ("bits", "photometric", "stored", "expected"),
    [
        (12, "MONOCHROME2", [0, 2048, 4095, 0xF000 | 2048], [0, 128, 255, 128]),  # bits above BitsStored dropped
        (16, "MONOCHROME2", [0, 257, 65535, 32768], [0, 1, 255, 128]),
        (8, "MONOCHROME1", [0, 55, 255, 128], [255, 200, 0, 127]),
        (12, "MONOCHROME1", [0, 2048, 4095, 4095], [255, 127, 0, 0]),
    ],
    ids=["12-bit", "16-bit", "MONOCHROME1", "MONOCHROME1-12-bit"],
)
def test_intensities_scale_by_bit_depth_and_monochrome1_inverts(tmp_path, bits, photometric, stored, expected):
    path = write_dicom(tmp_path / "scan.dcm", np.array(stored).reshape(2, 2), bits=bits, photometric=photometric)
    np.testing.assert_array_equal(read_frame(path, 0), np.array(expected, dtype=np.uint8).reshape(2, 2))


def test_rgb_with_equal_channels_is_grayscale_and_with_unequal_ones_is_refused(tmp_path):
    scan = _scan(2)
    grey = write_dicom(tmp_path / "grey.dcm", np.stack([scan] * 3, axis=-1), photometric="RGB")
    np.testing.assert_array_equal(read_frame(grey, 0), scan)
    tinted = np.stack([scan, scan, 255 - scan], axis=-1)
    colour = write_dicom(tmp_path / "colour.dcm", tinted, photometric="RGB")
    with pytest.raises(DicomError, match=r"colour\.dcm: colour image .*expected grayscale"):
        read_frame(colour, 0)


@pytest.mark.parametrize("frame", [3, -1])
def test_a_frame_out_of_range_names_the_file_the_frame_and_the_frame_count(tmp_path, frame):
    path = write_dicom(tmp_path / "volume.dcm", _scan(3, (3, 4, 4)))
    with pytest.raises(DicomError, match=rf"volume\.dcm: frame {frame} out of range; the file has 3 frame"):
        read_frame(path, frame)


def _not_dicom(path: Path) -> None:
    path.write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not DICOM" + bytes(200))


def _truncated(path: Path) -> None:
    write_dicom(path, _scan(4, (20, 20)))
    path.write_bytes(path.read_bytes()[:-150])


def _compressed(path: Path) -> None:
    """JPEG-LS: no plugin decodes it here (no pylibjpeg/pyjpegls), and the bytes are no JPEG-LS anyway."""
    ds = dcmread(write_dicom(path, _scan(5)))
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"])
    ds.save_as(path, enforce_file_format=True)


def _signed(path: Path) -> None:
    ds = dcmread(write_dicom(path, _scan(6)))
    ds.PixelRepresentation = 1
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_not_dicom, "not a readable DICOM file"),
        (_truncated, "cannot decode frame 0"),
        (_compressed, "cannot decode frame 0 .*JPEG-LS"),  # pydicom's message kept
        (_signed, "signed pixels"),
    ],
    ids=["not-dicom", "truncated", "compressed", "signed"],
)
def test_unreadable_files_raise_a_dicom_error_naming_the_file(tmp_path, make, message):
    path = tmp_path / "bad.dcm"
    make(path)
    with pytest.raises(DicomError, match=rf"{re.escape(str(path))}: {message}"):
        read_frame(path, 0)


def test_is_dicom_by_suffix_or_by_the_magic_of_a_suffixless_file(tmp_path):
    assert is_dicom(tmp_path / "absent.DCM") and is_dicom(Path("x.dicom"))
    suffixless = write_dicom(tmp_path / "IM000001", _scan(7))
    assert is_dicom(suffixless)
    _not_dicom(jpeg := tmp_path / "scan.jpeg")
    assert not is_dicom(jpeg)
    assert not is_dicom(tmp_path)


@pytest.mark.parametrize("patient_id", [None, ""])
def test_a_missing_or_empty_patient_id_reads_as_empty(tmp_path, patient_id):
    path = write_dicom(tmp_path / "anon.dcm", _scan(8), patient_id=patient_id)
    assert read_header(path) == DicomHeader(frames=1, patient_id="")
