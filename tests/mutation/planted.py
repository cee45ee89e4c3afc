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
        '    return frame["patient_id"].map(find)',
        '    return frame["patient_id"]',
    ),
    Plant(
        "linked ids not merged, summary counted on kept rows only",
        [f"{TEST_INGEST}::test_a_linked_id_with_scans_of_its_own_is_the_same_patient"],
        INGEST,
        '    frame["patient_group"] = _union_patients(frame, patient_links(scans))',
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
        "model variance ignores the generators",
        [
            f"{TEST_INFERENCE}::test_model_part_of_several_generators_is_their_means_spread_over_their_number",
            f"{TEST_INFERENCE}::test_a_candidates_generators_count_their_spread",
            "tests/test_report.py::test_a_candidates_generator_spread_widens_its_bound",
        ],
        INFERENCE,
        "    units = np.array([values[generators == g].mean() for g in groups]) if len(groups) > 1 else "
        "np.asarray(values)",
        "    units = np.asarray(values)",
    ),
    Plant(
        "patient variance by scan, not patient",
        [
            f"{TEST_INFERENCE}::test_patient_part_by_hand",
            f"{TEST_INFERENCE}::test_patient_part_counts_copies_of_a_patients_scan_once",
        ],
        INFERENCE,
        "    _, cluster = np.unique(patients, return_inverse=True)",
        "    cluster = np.arange(len(patients))",
    ),
    Plant(
        "patient variance of the candidate alone, the pairing lost",
        [
            f"{TEST_INFERENCE}::test_estimate_of_identical_runs_paired_is_zero_with_no_patient_variance",
            "tests/test_report.py::test_differences_are_paired_so_a_near_copy_of_r0_is_shown_non_inferior",
        ],
        INFERENCE,
        "        if reference is not None:\n            per_scan = per_scan - reference.scores(metric).mean(axis=0)\n",
        "",
    ),
    Plant(
        "AUROC patient variance of the candidate alone",
        [f"{TEST_INFERENCE}::test_auroc_needs_patient_draws_and_its_patient_variance_is_theirs_with_models_fixed"],
        INFERENCE,
        "            values = values - per_seed(reference, metric, draws.weights).mean(axis=1)",
        "            values = values - 0.0",
    ),
    Plant(
        "degrees of freedom summed, not Satterthwaite's",
        [f"{TEST_INFERENCE}::test_estimate_df_is_satterthwaites_and_infinite_for_a_known_value"],
        INFERENCE,
        '        return float(self.se**4 / spread) if spread > 0 else float("inf")',
        '        return float(sum(p.df for p in self.parts.values())) if spread > 0 else float("inf")',
    ),
    Plant(
        "bound on a normal quantile, not t",
        [
            f"{TEST_INFERENCE}::test_estimate_df_is_satterthwaites_and_infinite_for_a_known_value",
            f"{TEST_INFERENCE}::test_non_inferior_exactly_where_p_noninferior_crosses_alpha",
            "tests/test_report.py::test_summary_numbers_lower_bounds_and_holm",
        ],
        INFERENCE,
        "        return float(student_t.ppf(level, self.df))",
        "        return float(student_t.ppf(level, np.inf))",
    ),
    Plant(
        "p_noninferior tests no difference, not the margin",
        [f"{TEST_INFERENCE}::test_non_inferior_exactly_where_p_noninferior_crosses_alpha"],
        INFERENCE,
        "        p_noninferior = float(student_t.sf((delta + margin) / se, df))",
        "        p_noninferior = float(student_t.sf(delta / se, df))",
    ),
    Plant(
        "alpha not split over the regimes",
        ["tests/test_report.py::test_the_level_is_split_over_the_regimes"],
        REPORT,
        "    alpha = sequence_alpha(config.alpha, sum(family.decides for family in all_families))",
        "    alpha = config.alpha",
    ),
    Plant(
        "alpha split over real_only too, which decides nothing",
        ["tests/test_report.py::test_data_mode_compares_filled_cohorts_with_all_real_patients_at_the_realised_share"],
        REPORT,
        "    alpha = sequence_alpha(config.alpha, sum(family.decides for family in all_families))",
        "    alpha = sequence_alpha(config.alpha, len(all_families))",
    ),
    Plant(
        "every regime compared with R=0 of the full cohort",
        ["tests/test_report.py::test_summary_numbers_lower_bounds_and_holm"],
        REPORT,
        '            Family(f"keep{k}", arms[(0, k)], {r: arms[(r, k)] for r in ratios}, True, label)',
        '            Family(f"keep{k}", arms[(0, max(keeps))], {r: arms[(r, k)] for r in ratios}, True, label)',
    ),
    Plant(
        "data mode x = the patients left out, not the realised share",
        ["tests/test_report.py::test_data_mode_compares_filled_cohorts_with_all_real_patients_at_the_realised_share"],
        REPORT,
        "{shares[k]: arms[(100, k)] for k in cohorts}",
        "{100 - k: arms[(100, k)] for k in cohorts}",
    ),
    Plant(
        "AUROC draws across classes",
        ["tests/test_report.py::test_auroc_draws_keep_the_test_sets_class_make_up"],
        REPORT,
        "resamples=config.bootstrap, seed=config.seed, strata=reference.labels",
        "resamples=config.bootstrap, seed=config.seed, strata=None",
    ),
    Plant(
        "load_arm leaves the generators unlabelled",
        ["tests/test_report.py::test_load_arm_stacks_generators_by_seeds_by_class_name_and_refuses_other_test_scans"],
        REPORT,
        "        generators=None if ratio == 0 else np.repeat(generators, len(params.sweep.seeds)),",
        "        generators=None,",
    ),
    Plant(
        "replication warning silent above one generator",
        ["tests/test_report.py::test_replication_warning_names_a_single_generator_and_few_seeds"],
        REPORT,
        "    if generators >= STUDY_GENERATORS and seeds >= STUDY_SEEDS:",
        "    if generators > 1:",
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
