"""Mutation testing as a test: the fast subset of tests/mutation/run.sh (splits, linked patients, duplicates,
leaks, cohorts, the non-inferiority verdict and R_max), for CI. Minutes, so it runs only when asked:
SYNTHRATIO_MUTATION=1 (1 also runs the planted bugs of tests/mutation/planted.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ASKED = os.environ.get("SYNTHRATIO_MUTATION", "") not in ("", "0")
pytestmark = pytest.mark.skipif(not ASKED, reason="mutation testing takes minutes: set SYNTHRATIO_MUTATION=1 to run it")
# a worker per core, but one under `pytest -n 2`, whose other worker keeps the second core busy
WORKERS = os.environ.get("SYNTHRATIO_MUTATION_WORKERS") or ("1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")
# the mutants' and plants' own pytest runs are not xdist workers: they do not inherit its variables
ENV = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")} | {
    "SYNTHRATIO_MUTATION_WORKERS": WORKERS
}


def test_every_mutant_of_the_fast_subset_is_killed_or_explained(tmp_path: Path):
    env = {**ENV, "SYNTHRATIO_MUTATION_DIR": str(tmp_path)}
    done = subprocess.run(["bash", str(HERE / "run.sh"), "--fast"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    print(done.stdout)


def test_every_planted_bug_is_caught():
    done = subprocess.run([sys.executable, str(HERE / "planted.py")], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    print(done.stdout)
