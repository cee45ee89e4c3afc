"""evaluate_synthetic on the stage's input, scans on disk (ScanRows of prepared memory maps, read a block at a
time), against the same scans as arrays: every figure the same, and never every scan in memory at once."""

from pathlib import Path

import numpy as np
import pytest
import torch
from test_evaluate import CONFIG

from synthratio.data import prepared
from synthratio.data.prepared import ScanRows
from synthratio.evaluation.evaluate import RealScans, evaluate_synthetic
from synthratio.evaluation.features import write_png_folder


def test_scans_on_disk_give_the_arrays_figures_read_a_block_at_a_time(
    tmp_path: Path, scans, pool_features, monkeypatch
):
    heldout, train = scans(20, seed=0), scans(16, seed=3)
    groups = np.arange(20) // 2
    files = write_png_folder(scans(12, seed=1), tmp_path / "synthetic" / "CNV")
    # one file holding other scans around them, as a split's array holds other classes and patients
    np.save(tmp_path / "split.npy", np.concatenate([scans(5, seed=9), heldout, scans(3, seed=8), train[::-1]]))
    split = np.load(tmp_path / "split.npy", mmap_mode="r")
    on_disk = RealScans(
        heldout=ScanRows(split, np.arange(5, 25)), heldout_groups=groups, train=ScanRows(split, np.arange(43, 27, -1))
    )
    in_memory = evaluate_synthetic(
        files, RealScans(heldout, groups, train), pool_features, device=torch.device("cpu"), config=CONFIG,
        workdir=tmp_path / "a",
    )  # fmt: skip
    monkeypatch.setattr(prepared, "CHUNK_ROWS", 4)  # ScanRows iterate 4 scans at a time
    reads, read = [], ScanRows.__getitem__
    monkeypatch.setattr(
        ScanRows, "__getitem__", lambda self, index: reads.append(len(read(self, index))) or read(self, index)
    )
    monkeypatch.setattr(ScanRows, "__array__", lambda *args, **kwargs: pytest.fail("read every scan at once"))
    streamed = evaluate_synthetic(
        files, on_disk, pool_features, device=torch.device("cpu"), config=CONFIG, workdir=tmp_path / "b"
    )
    assert streamed == in_memory
    blocks = [n for n in reads if n != 1]  # single scans: the detector's picks, the figure's nearest scans
    assert blocks and max(blocks) == 4
