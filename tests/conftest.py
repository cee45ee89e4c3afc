import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
KERMANY_SAMPLE = Path(os.environ.get("SYNTHRATIO_KERMANY_SAMPLE", REPO.parent / "shared" / "kermany-sample"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests share two cores: one torch thread each keeps them fast and deterministic."""
    torch.set_num_threads(1)


@pytest.fixture
def kermany_sample() -> Path:
    if not (KERMANY_SAMPLE / "MANIFEST.csv").is_file():
        pytest.skip(f"real Kermany sample not found at {KERMANY_SAMPLE} (set SYNTHRATIO_KERMANY_SAMPLE)")
    return KERMANY_SAMPLE
