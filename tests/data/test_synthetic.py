import json
import logging

import numpy as np
import pytest
from PIL import Image

from synthratio.config import GenerateConfig
from synthratio.data.synthetic import SAMPLING_FILE, load_synthetic, sampling_settings, synthetic_seeds
from synthratio.layout import synthetic_file


def test_seeds_come_from_params():
    config = GenerateConfig(
        sampler="ddim",
        timestep_spacing="trailing",
        inference_steps=2,
        num_images=3,
        first_seed=10,
        batch_size=2,
        guidance_scale=1.0,
        noise_injection=False,
        noise_strength=1.0,
    )
    assert synthetic_seeds(config) == [10, 11, 12]
    # the k-th of several classes: its own range, no noise draw shared with another class
    assert synthetic_seeds(config, 0) == [10, 11, 12] and synthetic_seeds(config, 2) == [16, 17, 18]


def test_load_lists_files_from_seeds_and_resizes_with_a_warning(tmp_path, caplog):
    for seed in (0, 1):
        Image.fromarray(np.full((16, 16), 10 * seed, np.uint8)).save(synthetic_file(tmp_path, seed))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "stale.png")  # never listed, never read
    images = load_synthetic(tmp_path, [0, 1], 16)
    assert images.shape == (2, 16, 16) and images[1].mean() == 10
    with caplog.at_level(logging.WARNING):
        assert load_synthetic(tmp_path, [0, 1], 32).shape == (2, 32, 32)
    assert "resized" in caplog.text


def test_missing_scans_name_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="000007.png.*rerun generate"):
        load_synthetic(tmp_path, [7], 16)


def test_sampling_record_is_read_or_named_when_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{SAMPLING_FILE}: no sampling record .*rerun generate"):
        sampling_settings(tmp_path)
    (tmp_path / SAMPLING_FILE).write_text(json.dumps({"inference_steps": 20}))
    assert sampling_settings(tmp_path) == {"inference_steps": 20}
