"""Stage train_classifier@R-seed-keep: a classifier with R % synthetic CNV in every batch (mix.mode), on
`keep` % of the real CNV patients, tested on real scans."""

import argparse

from synthratio.classify.experiment import check_run, run_id, run_ratio
from synthratio.config import ParamsError, load_params
from synthratio.runtime import open_live, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ratio", type=int, required=True, help="percent of synthetic CNV per batch, 1..100 (add: ..1000)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--keep", type=int, default=100, help="percent of the real CNV training patients kept, 1..100")
    args = parser.parse_args()
    params = load_params()
    if args.ratio == 0:  # R=0 is the baseline stage, which never reads synthetic scans
        raise ParamsError("--ratio 0: run the baseline stage for R=0")
    check_run(params, args.ratio, args.keep)
    device = setup(params.runtime)
    with open_live(params.paths.live / run_id(args.ratio, args.seed, args.keep)) as live:
        run_ratio(params, args.ratio, args.seed, device, live, keep=args.keep)


if __name__ == "__main__":
    main()
