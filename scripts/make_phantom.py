"""Write the embedded default data set, the OCT phantom of params.yaml's `phantom` section, to paths.raw's source.

Run once on a fresh clone (the quick start does); data.dvc then tracks the folder like any real data set.
`-S key=value` reads params.yaml as `dvc exp run -S key=value` will leave it (the quick start's smoke preset).
"""

import argparse
import sys

from synthratio.config import load_params_with
from synthratio.data.phantom import write_phantom
from synthratio.runtime import run_stage, set_progress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="an override as `dvc exp run -S` takes it, e.g. phantom.patients.train=50",
    )  # fmt: skip
    params = load_params_with(parser.parse_args().overrides)
    set_progress(params.runtime.progress)
    if len(params.paths.raw) != 1:
        raise SystemExit(f"paths.raw has several sources {sorted(params.paths.raw)}; the phantom is written to one")
    raw = next(iter(params.paths.raw.values()))
    if raw.exists() and any(raw.iterdir()):
        print(f"{raw} already holds data; leaving it as it is")
        return
    counts = write_phantom(raw, params.phantom)
    total = sum(sum(per_class.values()) for per_class in counts.values())
    print(f"wrote {total} phantom scans to {raw}: {counts}", file=sys.stderr)


if __name__ == "__main__":
    run_stage(main)
