"""prepare at full size: scans decoded straight into memory maps and split 256 rows at a time (the full Kermany
set at 512 px is 22 GB), a failed run leaves none of them behind, and Kermany's 496-px-high scans reach 512 px
through prepare.max_upscale."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from test_ingest import CONFIG, save, scan

from synthratio.data import ingest, prepared
from synthratio.data.ingest import decode_scan, prepare_dataset
from synthratio.data.prepared import DatasetError, load_prepared


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    root = tmp_path / "raw"
    for cls, offset in (("CNV", 1000), ("NORMAL", 2000)):
        for patient in range(6):
            for number in (1, 2):
                save(root, f"{cls}/{cls}-{offset + patient}-{number}.png", scan(offset + 10 * patient + number))
    return root


def test_scans_are_decoded_into_memory_maps_and_split_a_block_at_a_time(raw, tmp_path, monkeypatch):
    """Each worker's result leaves its images in the decoded arrays and none in memory; the split arrays are the
    decoded scans, every one of them, whatever the block size."""
    monkeypatch.setattr(prepared, "CHUNK_ROWS", 5)
    kept = []
    decode_all = ingest._decode_all

    def spy(paths, frames, arrays, config):
        assert all(isinstance(array, np.memmap) and array.shape[0] == len(paths) for array in arrays.values())
        results = decode_all(paths, frames, arrays, config)
        kept.extend(result.resized for result in results)
        return results

    monkeypatch.setattr(ingest, "_decode_all", spy)
    out = tmp_path / "prepared"
    prepare_dataset(raw, out, CONFIG, sizes=(8, 16))
    assert len(kept) == 24 and all(resized == {} for resized in kept)
    assert not out.with_name("prepared.partial").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["index.csv", *(f"{split}_{size}px.npy" for split in ("train", "val", "test") for size in (8, 16))]
    )
    for split in ("train", "val", "test"):
        loaded = load_prepared(out, split, 16)
        for image, file in zip(loaded.images, loaded.files):
            np.testing.assert_array_equal(image, decode_scan(raw / file, (8, 16), mask=True).resized[16])


def test_a_failed_prepare_leaves_no_decoded_scans_and_the_old_output_as_it_was(raw, tmp_path):
    out = tmp_path / "prepared"
    prepare_dataset(raw, out, CONFIG, sizes=(16,))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (raw / "CNV" / "CNV-1003-9.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="CNV-1003-9.png"):
        prepare_dataset(raw, out, CONFIG, sizes=(16,))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared", "raw"]  # no prepared.partial
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_kermany_height_reaches_512_px_within_max_upscale(tmp_path):
    """496 px to 512 is 1.03x: kept at prepare.max_upscale 1.05 (params.yaml's), refused at 1.0 (no enlarging)
    and for a 384 px high scan (1.33x); the message names the setting."""
    path = save(tmp_path, "CNV-1-1.png", scan(1, 768, 496))
    assert decode_scan(path, (512,), mask=True, max_upscale=1.05).problem == ""
    assert decode_scan(path, (512,), mask=True, max_upscale=1.05).resized[512].shape == (512, 512)
    refused = decode_scan(path, (512,), mask=True, max_upscale=1.0).problem
    assert refused == "image 768x496 is smaller than the target size 512 (more than prepare.max_upscale=1.0 times)"
    small = save(tmp_path, "CNV-1-2.png", scan(2, 512, 384))
    assert "smaller than the target size 512" in decode_scan(small, (512,), mask=True, max_upscale=1.05).problem


def test_prepare_passes_max_upscale_to_every_worker(raw, tmp_path):
    """The 40-px-high test scans at 42 px: refused without enlarging, prepared at max_upscale 1.05."""
    with pytest.raises(DatasetError, match="smaller than the target size 42"):
        prepare_dataset(raw, tmp_path / "strict", CONFIG, sizes=(42,))
    summary = prepare_dataset(raw, tmp_path / "loose", replace(CONFIG, max_upscale=1.05), sizes=(42,))
    assert summary["scans"] == 24 and load_prepared(tmp_path / "loose", "train", 42).images.shape[1:] == (42, 42)
