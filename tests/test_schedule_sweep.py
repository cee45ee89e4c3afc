"""The README's noise-schedule sweep: queued variants, run two at a time, ranked by scripts/rank_experiments.py."""

import importlib.util
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pipeline_helpers import REPO, copy_project, run, start_queue, wait_for_queue

spec = importlib.util.spec_from_file_location("rank_experiments", REPO / "scripts" / "rank_experiments.py")
rank_experiments = sys.modules["rank_experiments"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rank_experiments)

METRIC = rank_experiments.DEFAULT_METRIC  # the mean over the keep-100 generators
VARIANTS = {"sched-linear": "linear", "sched-laplace": "laplace"}  # the baseline is squaredcos_cap_v2
QUEUE_TIMEOUT = 900  # s; both variants retrain the tiny generator and re-evaluate (about 1-2 min each here)


def exp_state(rev: str, name: str | None, schedule: str, fid: float | list | None, experiments=None) -> dict:
    """One row of `dvc exp show --json` as dvc 3.67 writes it (the shape was copied from a real run): `fid` of
    the keep-100 generator of seed 0, or a list, one per generator seed."""
    fids = [] if fid is None else fid if isinstance(fid, list) else [fid]
    metrics = {
        f"metrics/synthetic/keep_100_gen_{g}.json": {"data": {"domain_fid": value, "few_images": True}}
        for g, value in enumerate(fids)
    }
    data = {
        "rev": rev,
        "params": {"params.yaml": {"data": {"finetune": {"beta_schedule": schedule, "steps": 3}}}},
        "metrics": metrics,
        "deps": {},
        "outs": {},
        "meta": {},
    }
    return {"rev": rev, "name": name, "data": data, "error": None, "experiments": experiments}


def exp_range(name: str, state: str, schedule: str, fid: float | None) -> dict:
    rev = name.encode().hex().ljust(40, "0")  # a fake sha, one per name
    executor = {"state": state, "name": "dvc-task"}
    return {"revs": [exp_state(rev, name, schedule, fid)], "executor": executor, "name": name}


@pytest.fixture
def shown() -> list[dict]:
    experiments = [
        exp_range("lin", "success", "linear", 9.5),
        exp_range("lap", "success", "laplace", [4.0, 4.5]),
        exp_range("sig", "queued", "sigmoid", None),
        exp_range("broken", "failed", "linear", None),
        exp_range("nan", "success", "scaled_linear", float("nan")),
    ]
    return [
        exp_state("workspace", None, "laplace", 4.25),
        exp_state("a" * 40, "main", "squaredcos_cap_v2", 7.0, experiments),
    ]


def table_rows(output: str) -> list[list[str]]:
    """The ranking table's data rows, cells stripped."""
    rows = [line.strip("|").split("|") for line in output.splitlines() if re.match(r"\| \d+ \|", line)]
    return [[cell.strip() for cell in row] for row in rows]


def test_ranks_finished_variants_lower_first_with_changed_params(shown):
    ranked, rest = rank_experiments.rank(rank_experiments.collect(shown, METRIC))
    assert [(v.name, v.value) for v in ranked] == [("lap", 4.25), ("baseline main", 7.0), ("lin", 9.5)]
    assert ranked[0].spread == (4.0, 4.5) and ranked[1].spread == ()  # the mean of both generators, and each
    assert ranked[0].changed == {"finetune.beta_schedule": "laplace"} and ranked[1].changed == {}
    assert [(v.name, v.state) for v in rest] == [("sig", "queued"), ("broken", "failed"), ("nan", "success")]


def test_order_desc_puts_higher_first_and_bad_order_names_the_choices(shown):
    ranked, _ = rank_experiments.rank(rank_experiments.collect(shown, METRIC), "desc")
    assert [v.name for v in ranked] == ["lin", "baseline main", "lap"]
    with pytest.raises(ValueError, match="order='up'"):
        rank_experiments.rank([], "up")


def test_cli_prints_the_table_and_the_unranked(shown, tmp_path: Path, capsys):
    saved = tmp_path / "shown.json"
    saved.write_text(json.dumps(shown))
    rank_experiments.main(["--input", str(saved)])
    output = capsys.readouterr().out
    ranked = [["1", "lap", "4.25 (mean of 2: 4 to 4.5)"], ["2", "baseline main", "7"], ["3", "lin", "9.5"]]
    assert [row[:3] for row in table_rows(output)] == ranked
    assert "not ranked: sig (queued)" in output and "not ranked: broken (failed)" in output
    assert "not ranked: nan (no domain_fid)" in output


def test_cli_fails_when_no_experiment_has_the_metric(shown, tmp_path: Path, capsys):
    saved = tmp_path / "shown.json"
    saved.write_text(json.dumps(shown))
    with pytest.raises(SystemExit) as exited:
        rank_experiments.main(["--input", str(saved), "--metric", "metrics/synthetic/keep_100_gen_0.json:no_such"])
    assert exited.value.code == 1
    assert "no finished experiment has metrics/synthetic/keep_100_gen_0.json:no_such" in capsys.readouterr().out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[Path, str, float]:
    """Two schedule variants queued on the tiny project up to evaluate_synthetic, run two at a time and
    ranked: (project, rank_experiments output, seconds the queue took)."""
    project = copy_project(tmp_path_factory, "schedule_sweep")
    for name, schedule in VARIANTS.items():
        setting = f"finetune.beta_schedule={schedule}"
        targets = ["evaluate_synthetic@100-0", "evaluate_synthetic@100-1"]  # the tiny build's two generators
        run(["bash", "scripts/queue.sh", "-n", name, "-S", setting, *targets], project)  # the README's way
    started = time.monotonic()
    start_queue(project, jobs=2)
    status = wait_for_queue(project, list(VARIANTS), QUEUE_TIMEOUT)
    seconds = time.monotonic() - started
    for name in VARIANTS:
        if not re.search(rf"\b{name}\b.*Success", status):
            log = run(["dvc", "queue", "logs", name], project, check=False)
            pytest.fail(f"experiment {name} did not succeed:\n{status}\n{log.stdout[-3000:]}{log.stderr[-2000:]}")
    output = run([sys.executable, "scripts/rank_experiments.py"], project).stdout
    return project, output, seconds


@pytest.mark.slow
def test_sweep_ranks_both_variants_by_domain_fid(sweep):
    project, output, seconds = sweep
    print(f"queue of {len(VARIANTS)} variants ran in {seconds:.0f} s")
    rows = table_rows(output)
    names = [row[1] for row in rows]
    assert set(VARIANTS) <= set(names) and any(name.startswith("baseline") for name in names)
    values = [float(row[2].split()[0]) for row in rows]
    assert values == sorted(values) and [row[0] for row in rows] == [str(i) for i in range(1, len(rows) + 1)]
    for row in rows:
        if row[1] in VARIANTS:
            assert row[3] == f"finetune.beta_schedule={VARIANTS[row[1]]}"
    # the printed values are the experiments' own figures: plain files in each experiment's commit
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    revs = {exp["name"]: exp["revs"][0]["rev"] for baseline in shown for exp in baseline.get("experiments") or []}
    fids = {
        name: [
            json.loads(run(["git", "show", f"{rev}:metrics/synthetic/keep_100_gen_{g}.json"], project).stdout)[
                "domain_fid"
            ]
            for g in (0, 1)
        ]
        for name, rev in revs.items()
    }
    for row in rows:
        if row[1] in VARIANTS:
            assert float(row[2].split()[0]) == pytest.approx(np.mean(fids[row[1]]), rel=1e-5)


@pytest.mark.slow
def test_exp_show_lists_the_variants_and_only_the_answer_as_metrics(sweep):
    """The README's `dvc exp show --drop 'Created|State|Executor'`: both variants listed; the generators'
    figures are no DVC metric (they stopped before the report: their metrics/summary.json is their commit's)."""
    project, _, _ = sweep
    table = run(
        ["dvc", "exp", "show", "--drop", "Created|State|Executor", "--no-pager"], project, env={"COLUMNS": "1024"}
    ).stdout
    assert all(name in table for name in VARIANTS) and "k100.r_max" in table and "domain_fid" not in table
