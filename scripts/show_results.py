"""Print the run's answer in a few lines (what the quick start ends with): R_max per regime, accuracy per R,
the synthetic scans' figures, and where the report and figures are.

    python scripts/show_results.py
"""

from synthratio.config import load_params
from synthratio.layout import detail_path
from synthratio.report import read_synthetic, terminal_summary
from synthratio.runtime import read_json, run_stage


def main() -> None:
    params = load_params()
    summary = read_json(detail_path(params.paths.metrics / "summary.json"))
    synthetic = read_synthetic(params)
    print(terminal_summary(summary, synthetic, str(params.paths.plots)))


if __name__ == "__main__":
    run_stage(main)
