"""Stage train_classifier@R-seed: a classifier with R % synthetic CNV in every batch, tested on real scans."""

import argparse

from synthratio.classify.experiment import run_ratio
from synthratio.config import ParamsError, load_params
from synthratio.runtime import open_live, run_name, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ratio", type=int, required=True, help="percent of synthetic CNV per batch, 1..100")
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args()
    if not 0 < args.ratio <= 100:
        raise ParamsError(f"--ratio {args.ratio}; expected a percent in 1..100 (R=0 is the baseline stage)")
    params = load_params()
    device = setup(params.runtime)
    with open_live(params.paths.live / run_name(args.ratio, args.seed)) as live:
        run_ratio(params, args.ratio, args.seed, device, live)


if __name__ == "__main__":
    main()
