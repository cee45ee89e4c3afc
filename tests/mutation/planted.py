"""Planted bugs: plausible mistakes that would silently change the study's answer (or hide that a check never
ran), each planted in a scratch copy of the repository. The tests named with it must pass on the untouched
copy and fail on the planted one; mutmut cannot make most of these (a dropped statement, a wrong column).

    python tests/mutation/planted.py            every plant
    python tests/mutation/planted.py NAME ...   the plants whose name contains NAME
    python tests/mutation/planted.py --exact NAME ...   the plants named NAME exactly

One pytest process per worker (SYNTHRATIO_MUTATION_WORKERS, default 2: a worker per core), one thread each,
each worker in its own scratch copy; the source tree is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from queue import SimpleQueue

REPO = Path(__file__).resolve().parents[2]
SAMPLE = Path(os.environ.get("SYNTHRATIO_KERMANY_SAMPLE", REPO.parent / "shared" / "kermany-sample"))
INGEST, DETECTOR = "src/synthratio/data/ingest.py", "src/synthratio/evaluation/detector.py"
INFERENCE, REPORT = "src/synthratio/inference.py", "src/synthratio/report.py"
HOOK = "tests/hooks/sitecustomize.py"
TEST_INGEST, TEST_INFERENCE = "tests/data/test_ingest.py", "tests/test_inference.py"
GUARD_TEST = "tests/test_reliability.py::test_the_network_guard_logs_a_stage_that_tries_and_leaves_other_scripts_alone"


@dataclass(frozen=True)
class Plant:
    name: str
    tests: list[str]  # pytest node ids that must fail
    path: str = ""  # file changed, relative to the repository
    old: str = ""  # text replaced (exactly one occurrence)
    new: str = ""
    env: dict[str, str] = field(default_factory=dict)  # or: environment that plants the bug


PLANTS = [
    Plant(
        "linked ids not merged",
        [f"{TEST_INGEST}::test_a_linked_id_with_scans_of_its_own_is_the_same_patient"],
        INGEST,
        '    return frame["patient_id"].map(lambda pid: find(int(pid)))',
        '    return frame["patient_id"]',
    ),
    Plant(
        "linked ids not merged, summary counted on kept rows only",
        [f"{TEST_INGEST}::test_a_linked_id_with_scans_of_its_own_is_the_same_patient"],
        INGEST,
        '    frame["patient_group"] = _union_patients(frame)',
        '    frame["patient_group"] = frame["patient_id"]',
    ),
    Plant(
        "split not stratified",
        [f"{TEST_INGEST}::test_patient_split_is_stratified_by_each_patients_classes"],
        INGEST,
        '["class"].apply(lambda c: "+".join(sorted(set(c))))',
        '["class"].apply(lambda c: "any")',
    ),
    Plant(
        "no shuffle before the split",
        [f"{TEST_INGEST}::test_patient_split_is_shuffled_by_the_seed_and_repeatable"],
        INGEST,
        "        rng.shuffle(ids)\n",
        "",
    ),
    Plant(
        "split by scan, not by patient",
        [f"{TEST_INGEST}::test_patient_split_is_disjoint_and_arrays_match_index"],
        INGEST,
        '        frame["split"] = frame["patient_group"].map(splits)',
        '        frame["split"] = frame["patient_group"].map(splits).sample(frac=1.0, random_state=0).to_numpy()',
    ),
    Plant(
        "official split keeps leaks",
        [f"{TEST_INGEST}::test_official_split_removes_leaks_and_widens_val"],
        INGEST,
        "    return keep & ~leak, int(leak.sum())",
        "    return keep, int(leak.sum())",
    ),  # counted, not dropped
    Plant(
        "inverted detector",
        [
            "tests/evaluation/test_detector.py::test_auroc_is_near_chance_for_the_same_distribution_and_high_for_a_fingerprint"
        ],
        DETECTOR,
        "    p_synthetic = probs[:, SYNTHETIC]",
        "    p_synthetic = probs[:, REAL]",
    ),
    Plant(
        "detector scored on its training scans (AUROC 0.60: the pin)",
        [
            "tests/evaluation/test_detector.py::test_auroc_is_near_chance_for_the_same_distribution_and_high_for_a_fingerprint[0]"
        ],
        DETECTOR,
        "    real_parts = (real_train, real_heldout[val_rows], real_heldout[test_rows])",
        "    real_parts = (real_train, real_heldout[val_rows], real_train[: len(test_rows)])",
    ),
    Plant(
        "bootstrap resamples scans, not patients",
        [
            f"{TEST_INFERENCE}::test_interval_pinned_for_a_fixed_seed",
            f"{TEST_INFERENCE}::test_interval_widens_when_a_patient_brings_many_copies_of_one_scan",
        ],
        INFERENCE,
        "    _, first, cluster = np.unique(np.asarray(patients), return_index=True, return_inverse=True)",
        "    _, first, cluster = np.unique(np.arange(len(patients)), return_index=True, return_inverse=True)",
    ),
    Plant(
        "permutation test flips scans, not patients",
        [f"{TEST_INFERENCE}::test_permutation_p_is_exact_for_few_patients_and_counts_each_scan_once"],
        INFERENCE,
        "    _, cluster = np.unique(candidate.patients, return_inverse=True)",
        "    cluster = np.arange(len(candidate.patients))",
    ),
    Plant(
        "permutation test on the first seed only",
        [f"{TEST_INFERENCE}::test_exact_permutation_p_matches_swapping_every_patients_predictions"],
        INFERENCE,
        "    a, b = candidate.scores(metric), reference.scores(metric)",
        "    a, b = candidate.scores(metric)[:1], reference.scores(metric)[:1]",
    ),
    Plant(
        "candidate and R=0 bootstrapped on separate draws",
        ["tests/test_report.py::test_differences_are_paired_so_a_near_copy_of_r0_is_shown_non_inferior"],
        REPORT,
        "        arm_draws = {m: bootstrap(arm.runs, m, draws) if x else reference_draws[m] for m in reference_draws}",
        "        own = cluster_draws(reference.patients, n_seeds=len(reference.probs), resamples=config.bootstrap, "
        "seed=config.seed + x, strata=reference.labels)\n"
        "        arm_draws = {m: bootstrap(arm.runs, m, own) if x else reference_draws[m] for m in reference_draws}",
    ),
    Plant(
        "network guard never loaded",
        [GUARD_TEST],
        HOOK,
        'if os.environ.get("SYNTHRATIO_TEST_NO_NETWORK"):',
        'if os.environ.get("SYNTHRATIO_TEST_NO_NETWORK_GUARD"):',
    ),
    Plant(
        "network guard blind to connect_ex",
        [GUARD_TEST],
        HOOK,
        "    socket.socket.connect_ex = _guard(socket.socket.connect_ex)\n",
        "",
    ),
    Plant(
        "real sample at a wrong path",
        [f"{TEST_INGEST}::test_kermany_sample"],
        env={"SYNTHRATIO_KERMANY_SAMPLE": "/nonexistent/kermany-sample", "SYNTHRATIO_REQUIRE_SAMPLE": "1"},
    ),
]


def copy_tree(target: Path) -> None:
    """The files git would commit under src/ and tests/, and pyproject.toml and params.yaml."""
    command = ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--",
               "src", "tests", "pyproject.toml", "params.yaml"]  # fmt: skip
    listed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)


def pytest(root: Path, tests: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """The tests, run in `root` with its src/ first on the path (before the editable install's)."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(root / "src"),
        "OMP_NUM_THREADS": "1",
        "SYNTHRATIO_KERMANY_SAMPLE": str(SAMPLE),
    }
    environment.pop("SYNTHRATIO_REQUIRE_SAMPLE", None)
    environment.update(env)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        "not slow",
        "--rootdir",
        str(root),
        "--basetemp",
        str(root / ".pytest-tmp"),  # pytest's shared numbered temp folders are not safe for processes side by side
        *tests,
    ]
    return subprocess.run(command, cwd=root, env=environment, capture_output=True, text=True)


def plant_and_test(root: Path, plant: Plant) -> tuple[bool, str]:
    """Plants the bug in the copy at `root`, runs its tests and takes the bug out again: (caught, report line)."""
    if plant.path:
        original = (root / plant.path).read_text()
        if original.count(plant.old) != 1:
            count = original.count(plant.old)
            return False, f"{plant.name:55} CANNOT PLANT: {plant.old!r} occurs {count} times in {plant.path}"
        (root / plant.path).write_text(original.replace(plant.old, plant.new))
    try:
        done = pytest(root, plant.tests, plant.env)
    finally:
        if plant.path:
            (root / plant.path).write_text(original)
    failed = [line.split(" ")[1] for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    if done.returncode == 1 and failed:
        return True, f"{plant.name:55} caught by " + ", ".join(t.split("::")[-1] for t in failed)
    return False, f"{plant.name:55} NOT CAUGHT\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"


def main(names: list[str]) -> int:
    exact = names[:1] == ["--exact"]
    names = names[exact:]
    plants = [p for p in PLANTS if not names or any(n == p.name if exact else n in p.name for n in names)]
    workers = max(1, min(int(os.environ.get("SYNTHRATIO_MUTATION_WORKERS", "2")), len(plants)))
    with tempfile.TemporaryDirectory(prefix="synthratio-planted-") as scratch:
        copies: SimpleQueue[Path] = SimpleQueue()  # a worker takes a copy for one plant, then puts it back
        for worker in range(workers):
            copy_tree(Path(scratch) / f"repo{worker}")
            copies.put(Path(scratch) / f"repo{worker}")

        def on_a_copy(test: Callable[[Path], tuple[bool, str]]) -> tuple[bool, str]:
            root = copies.get()
            try:
                return test(root)
            finally:
                copies.put(root)

        def control(root: Path) -> tuple[bool, str]:
            done = pytest(root, sorted({t for p in plants for t in p.tests}), {})
            return done.returncode == 0, f"{'untouched copy':55} {'passes' if done.returncode == 0 else 'FAILS'}"

        with ThreadPoolExecutor(workers) as pool:
            jobs = [pool.submit(on_a_copy, control)]
            jobs += [pool.submit(on_a_copy, partial(plant_and_test, plant=plant)) for plant in plants]
            failures = 0
            for job in jobs:  # in PLANTS order, whichever worker finishes first
                passed, line = job.result()
                print(line, flush=True)
                failures += not passed
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
