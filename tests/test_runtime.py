import json

import pytest
import torch
from safetensors.torch import save_file

from synthratio.config import RuntimeConfig
from synthratio.layout import run_name
from synthratio.runtime import load_safetensors, setup, write_atomically, write_json


def test_write_json_replaces_whole_file(tmp_path):
    path = tmp_path / "metrics" / "m.json"
    write_json(path, {"b": 1, "a": 0.5})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": 1}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"old": True})

    def crash(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, crash)
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_setup_device_and_names():
    assert setup(RuntimeConfig(device="cpu")).type == "cpu"
    assert run_name(50, 25) == "ratio_50_keep_25"


def test_load_safetensors_round_trip_and_missing_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.arange(3.0)}, str(path))
    assert torch.equal(load_safetensors(path)["w"], torch.arange(3.0))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_safetensors(tmp_path / "missing.safetensors")
