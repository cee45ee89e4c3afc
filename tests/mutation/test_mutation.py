"""Mutation testing as a test: the CI subset of tests/mutation/run.sh (splits, linked patients, leaks, cohorts,
the non-inferiority verdict and R_max). Minutes, so it runs only when asked (tests/mutation/record.py):
SYNTHRATIO_MUTATION=1 (CI) runs the modules whose code or tests changed since their last passing run, recorded
in tests/mutation/passed.json; =force runs the whole subset. A passing run records what it covered."""

import subprocess
from pathlib import Path

import pytest
from record import ASKED, ENV, FAST_GLOBS, FORCED, mutation_keys, record_passed, stale

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(not ASKED, reason="mutation testing takes minutes: set SYNTHRATIO_MUTATION=1 to run it")


def test_every_mutant_of_the_fast_subset_is_killed_or_explained(tmp_path: Path):
    keys = mutation_keys()
    modules = list(keys) if FORCED else stale("mutants", keys)
    if not modules:
        pytest.skip(f"mutation subset skipped: {', '.join(keys)} and their tests unchanged since their last passing "
                    "run (tests/mutation/passed.json); SYNTHRATIO_MUTATION=force runs it")  # fmt: skip
    globs = [glob for module in modules for glob in FAST_GLOBS[module]]
    env = {**ENV, "SYNTHRATIO_MUTATION_DIR": str(tmp_path)}
    done = subprocess.run(["bash", str(HERE / "run.sh"), *globs], env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    print(f"mutation subset ran for {', '.join(modules)}:\n{done.stdout}")
    record_passed("mutants", {module: keys[module] for module in modules})
