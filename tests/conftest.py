import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
KERMANY_SAMPLE = Path(os.environ.get("SYNTHRATIO_KERMANY_SAMPLE", REPO.parent / "shared" / "kermany-sample"))
KERMANY_MORE = Path(os.environ.get("SYNTHRATIO_KERMANY_MORE", REPO.parent / "shared" / "kermany-more"))
REQUIRE_SAMPLE = "SYNTHRATIO_REQUIRE_SAMPLE"  # =1: a missing real sample fails the tests that need it (CI)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_sample: reads the shared Kermany sample (set automatically by its fixture)"
    )


# Modules in the order `pytest -n 2` hands them to its workers (pyproject's addopts: --dist loadfile, each module
# on one worker in file order, and --no-loadscope-reorder, so this order rather than xdist's count of tests): the
# longest first (seconds measured on this two-core machine), then the rest as collected. The first builds the
# shared tiny pipeline (pipeline_helpers.built_project); the next few need none, so the other worker is not
# left waiting for that build.
LONGEST_FIRST = [
    "tests/test_pipeline_modes.py",  # 185 s: three experiments that rerun most stages
    "tests/mutation/test_mutation.py",  # 590 s when its modules changed, else skipped
    "tests/mutation/test_planted.py",  # 320 s when its plants changed, else skipped
    "tests/diffusion/test_training.py",  # 45 s
    "tests/evaluation/test_degraded.py",  # 35 s
    "tests/test_remote.py",  # 80 s
    "tests/test_reliability.py",  # 80 s
    "tests/test_schedule_sweep.py",  # 60 s
    "tests/test_pipeline_experiments.py",  # 40 s
    "tests/diffusion/test_sampling.py",  # 20 s
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"kermany_sample", "kermany_more"} & set(getattr(item, "fixturenames", ())):
            item.add_marker("real_sample")
    rank = {module: place for place, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: file order within


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests share two cores: one torch thread each keeps them fast and deterministic."""
    torch.set_num_threads(1)


def sample_problem(root: Path, variable: str = "SYNTHRATIO_KERMANY_SAMPLE") -> str:
    """Why `root` is not a shared sample, or "" when it is."""
    if not (root / "MANIFEST.csv").is_file():
        return f"real Kermany sample not found at {root} (no MANIFEST.csv; set {variable})"
    return ""


def _shared(root: Path, variable: str) -> Path:
    """`root`, a shared real sample; skipped where it is absent, failed instead when SYNTHRATIO_REQUIRE_SAMPLE=1."""
    problem = sample_problem(root, variable)
    if problem and os.environ.get(REQUIRE_SAMPLE, "") not in ("", "0"):
        pytest.fail(f"{problem}; {REQUIRE_SAMPLE}={os.environ[REQUIRE_SAMPLE]} requires it", pytrace=False)
    if problem:
        pytest.skip(problem)
    return root


@pytest.fixture
def kermany_sample() -> Path:
    """The shared real sample (../shared/kermany-sample)."""
    return _shared(KERMANY_SAMPLE, "SYNTHRATIO_KERMANY_SAMPLE")


@pytest.fixture
def kermany_more() -> Path:
    """The second shared sample (../shared/kermany-more), which shares patients with the first."""
    return _shared(KERMANY_MORE, "SYNTHRATIO_KERMANY_MORE")
