"""The planted bugs of tests/mutation/planted.py as a test, beside the mutation subset: run only when asked,
SYNTHRATIO_MUTATION=1 (CI) the plants whose file or tests changed since their last passing run
(tests/mutation/passed.json), =force all of them. A passing run records what it covered."""

import subprocess
import sys
from pathlib import Path

import pytest
from planted import PLANTS
from record import ASKED, ENV, FORCED, plant_keys, record_passed, stale

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(not ASKED, reason="planted bugs take minutes: set SYNTHRATIO_MUTATION=1 to run them")


def test_every_planted_bug_is_caught():
    keys = plant_keys(PLANTS)
    names = list(keys) if FORCED else stale("plants", keys)
    if not names:
        pytest.skip(f"planted bugs skipped: the {len(keys)} plants' files and tests unchanged since their last "
                    "passing run (tests/mutation/passed.json); SYNTHRATIO_MUTATION=force runs them")  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(HERE / "planted.py"), "--exact", *names], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    print(f"{len(names)} of {len(keys)} planted bugs ran:\n{done.stdout}")
    record_passed("plants", {name: keys[name] for name in names})
