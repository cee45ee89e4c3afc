import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
KERMANY_SAMPLE = Path(os.environ.get("SYNTHRATIO_KERMANY_SAMPLE", REPO.parent / "shared" / "kermany-sample"))
REQUIRE_SAMPLE = "SYNTHRATIO_REQUIRE_SAMPLE"  # =1: a missing real sample fails the tests that need it (CI)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_sample: reads the shared Kermany sample (set automatically by its fixture)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "kermany_sample" in getattr(item, "fixturenames", ()):
            item.add_marker("real_sample")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests share two cores: one torch thread each keeps them fast and deterministic."""
    torch.set_num_threads(1)


def sample_problem(root: Path) -> str:
    """Why `root` is not the shared sample, or "" when it is."""
    if not (root / "MANIFEST.csv").is_file():
        return f"real Kermany sample not found at {root} (no MANIFEST.csv; set SYNTHRATIO_KERMANY_SAMPLE)"
    return ""


@pytest.fixture
def kermany_sample() -> Path:
    """The shared real sample; skipped where it is absent, failed instead when SYNTHRATIO_REQUIRE_SAMPLE=1."""
    problem = sample_problem(KERMANY_SAMPLE)
    if problem and os.environ.get(REQUIRE_SAMPLE, "") not in ("", "0"):
        pytest.fail(f"{problem}; {REQUIRE_SAMPLE}={os.environ[REQUIRE_SAMPLE]} requires it", pytrace=False)
    if problem:
        pytest.skip(problem)
    return KERMANY_SAMPLE
