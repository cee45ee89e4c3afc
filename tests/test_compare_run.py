"""scripts/compare_run.py, what the quick start ends with: rounding told apart from a run that went wrong."""

import importlib.util
import sys

import pandas as pd
import pytest
from pipeline_helpers import REPO

spec = importlib.util.spec_from_file_location("compare_run", REPO / "scripts" / "compare_run.py")
compare_run = sys.modules["compare_run"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_run)

REFERENCE = {"k100": {"r_max": 50, "stop": "inferior", "delta": -0.03, "lower": -0.021, "fid_gap": 4.0,
                      "det_auroc": 0.8}}  # fmt: skip


def table(se: float) -> pd.DataFrame:
    return pd.DataFrame({"family": ["keep100"] * 3, "x": [0, 50, 100], "se": [None, 0.004, se]})


@pytest.mark.parametrize(
    ("changes", "last"),
    [
        ({}, "Rounding at most: same verdicts, every difference within 3 standard errors."),
        ({"delta": -0.025, "lower": -0.0195, "r_max": 100, "stop": "none"}, "Rounding: every difference is within 3 "
         "standard errors, but a lower bound near -margin crossed it (k100): a borderline verdict at this size, not "
         "a broken run."),
        ({"delta": +0.02}, "NOT ROUNDING: k100 moved more than 3 standard errors (or is missing): other settings or a "
         "broken install; compare `pip freeze` and params.yaml with the reference's."),
    ],
)  # fmt: skip
def test_differences_are_measured_in_the_runs_own_standard_errors(changes: dict, last: str):
    fresh = {"k100": {**REFERENCE["k100"], **changes}}
    lines = compare_run.compare(fresh, REFERENCE, table(0.01), table(0.01))
    assert lines[-1] == last
    apart = abs(fresh["k100"]["delta"] + 0.03) / 0.01
    assert f"difference at R=100 {fresh['k100']['delta']:+.4f} (-0.0300), {apart:.1f} se apart" in lines[0]


def test_a_regime_missing_from_this_run_is_not_rounding():
    lines = compare_run.compare({}, REFERENCE, table(0.01), table(0.01))
    assert lines[0] == "  k100: in the reference, not in this run (other sweep.keep?)"
    assert lines[-1].startswith("NOT ROUNDING: k100")
