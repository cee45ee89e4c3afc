"""What the CI subset of mutation testing and the planted bugs last passed on.

tests/mutation/passed.json holds, for each module of the fast subset and each planted bug, the hash of the files
its verdict depends on (the module or the planted file, the tests that must catch it, the conftests and the
mutation tooling) at its last passing run. A run of tests/mutation/test_mutation.py or test_planted.py with
SYNTHRATIO_MUTATION=1 (CI) runs only what is stale: a hash that differs from the record, or none recorded; one
that passes records its new hashes. SYNTHRATIO_MUTATION=force runs everything and records it.

    python tests/mutation/record.py             what is stale, one line each (exit 1 when anything is)
    python tests/mutation/record.py --fast-globs   the mutant globs of the CI subset (run.sh --fast reads them)
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import tomllib
from filelock import FileLock

REPO = Path(__file__).resolve().parents[2]
RECORD = Path(__file__).with_name("passed.json")

# When the pytest wrappers (test_mutation.py, test_planted.py) run: SYNTHRATIO_MUTATION=1 what is stale, =force all
ASKED = os.environ.get("SYNTHRATIO_MUTATION", "") not in ("", "0")
FORCED = os.environ.get("SYNTHRATIO_MUTATION") == "force"
# a worker per core, but one under `pytest -n 2`, whose other worker keeps the second core busy
WORKERS = os.environ.get("SYNTHRATIO_MUTATION_WORKERS") or ("1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")
# the mutants' and plants' own pytest runs are not xdist workers: they do not inherit its variables
ENV = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")} | {
    "SYNTHRATIO_MUTATION_WORKERS": WORKERS
}

# The CI subset (run.sh --fast): patient split, linked-patient merge, leaks, cohorts, the bound's variance
# components, verdict, alpha's split, R_max.
FAST_GLOBS: dict[str, list[str]] = {
    "src/synthratio/data/ingest.py": [
        "synthratio.data.ingest.x__union_patients__mutmut_*",
        "synthratio.data.ingest.x_assign_patient_splits__mutmut_*",
        "synthratio.data.ingest.x__drop_leaks__mutmut_*",
    ],
    "src/synthratio/data/cohort.py": [
        "synthratio.data.cohort.x_cohort_patients__mutmut_*",
        "synthratio.data.cohort.x_cohort_rows__mutmut_*",
    ],
    "src/synthratio/inference.py": [
        "synthratio.inference.x_model_part__mutmut_*",
        "synthratio.inference.x_patient_part__mutmut_*",
        "synthratio.inference.x_non_inferiority__mutmut_*",
        "synthratio.inference.x_sequence_alpha__mutmut_*",
        "synthratio.inference.x_fixed_sequence__mutmut_*",
    ],
}
# what every verdict also depends on: the fixtures every test sees
CONFTESTS = ["tests/conftest.py", "tests/evaluation/conftest.py", "tests/diffusion/conftest.py"]
MUTATION_TOOLING = ["pyproject.toml", "tests/mutation/run.sh", "tests/mutation/score.py", "tests/mutation/SURVIVORS.md"]
PLANT_TOOLING = ["tests/mutation/planted.py"]


def _files(names: Iterable[str]) -> list[Path]:
    """The files named (a folder: every .py file under it), sorted, each once."""
    found: set[Path] = set()
    for name in names:
        path = REPO / name
        found.update(path.rglob("*.py") if path.is_dir() else [path])
    return sorted(found)


def digest(names: Iterable[str], extra: str = "") -> str:
    """sha256 over the files' paths and bytes (a missing file counts as missing) and `extra`."""
    hashed = hashlib.sha256(extra.encode())
    for path in _files(names):
        hashed.update(str(path.relative_to(REPO)).encode() + b"\0")
        hashed.update(path.read_bytes() if path.is_file() else b"<missing>")
    return hashed.hexdigest()


def mutation_tests() -> list[str]:
    """The tests mutmut runs against each mutant ([tool.mutmut] pytest_add_cli_args_test_selection)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["pytest_add_cli_args_test_selection"])


def mutation_keys() -> dict[str, str]:
    """Per module of the fast subset: the hash of the module, the tests that kill its mutants and the tooling."""
    shared = [*mutation_tests(), *CONFTESTS, *MUTATION_TOOLING]
    return {module: digest([module, *shared], extra=" ".join(globs)) for module, globs in FAST_GLOBS.items()}


def plant_keys(plants: Iterable) -> dict[str, str]:
    """Per planted bug (planted.Plant): the hash of its definition, the file it plants in and the tests that
    must catch it."""
    keys = {}
    for plant in plants:
        tests = sorted({test.split("::")[0] for test in plant.tests})
        files = [*([plant.path] if plant.path else []), *tests, *CONFTESTS, *PLANT_TOOLING]
        keys[plant.name] = digest(files, extra=repr(plant))
    return keys


def read_record() -> dict[str, dict[str, str]]:
    return json.loads(RECORD.read_text()) if RECORD.is_file() else {}


def stale(kind: str, keys: dict[str, str]) -> list[str]:
    """The names in `keys` whose hash differs from the record's `kind` section ("mutants" or "plants")."""
    recorded = read_record().get(kind, {})
    return [name for name, key in keys.items() if recorded.get(name) != key]


def record_passed(kind: str, keys: dict[str, str]) -> None:
    """Record that `keys` passed (under a lock: the mutation and plant tests may finish side by side)."""
    with FileLock(str(RECORD) + ".lock"):
        record = read_record()
        record.setdefault(kind, {}).update(keys)
        record = {section: dict(sorted(entries.items())) for section, entries in sorted(record.items())}
        RECORD.write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str]) -> int:
    if argv == ["--fast-globs"]:
        print("\n".join(glob for globs in FAST_GLOBS.values() for glob in globs))
        return 0
    sys.path.insert(0, str(Path(__file__).parent))
    from planted import PLANTS

    lines = [f"mutants of {name}" for name in stale("mutants", mutation_keys())]
    lines += [f"plant {name!r}" for name in stale("plants", plant_keys(PLANTS))]
    print("\n".join(f"stale: {line}" for line in lines) or f"nothing stale: {RECORD.relative_to(REPO)} is current")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
