"""Stage baseline@seed-keep: the real-only classifier (R=0) on `keep` % of the real CNV patients. It never
reads synthetic data, so a new generator does not rerun it."""

import argparse

from synthratio.classify.experiment import check_run, run_id, run_ratio
from synthratio.config import load_params
from synthratio.runtime import open_live, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--keep", type=int, default=100, help="percent of the real CNV training patients kept, 1..100")
    args = parser.parse_args()
    params = load_params()
    check_run(params, 0, args.keep)
    device = setup(params.runtime)
    with open_live(params.paths.live / run_id(0, args.seed, args.keep)) as live:
        run_ratio(params, 0, args.seed, device, live, keep=args.keep)


if __name__ == "__main__":
    main()
