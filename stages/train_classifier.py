"""Stage train_classifier@R-seed-keep: a classifier with R % synthetic CNV in every batch (mix.mode), on
`keep` % of the real CNV patients, tested on real scans."""

import argparse

from synthratio.classify.experiment import run_id, run_ratio
from synthratio.config import MAX_ADD_RATIO, ParamsError, load_params
from synthratio.runtime import open_live, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ratio", type=int, required=True, help="percent of synthetic CNV per batch, 1..100 (add: ..1000)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--keep", type=int, default=100, help="percent of the real CNV training patients kept, 1..100")
    args = parser.parse_args()
    params = load_params()
    top = 100 if params.mix.mode == "replace" else MAX_ADD_RATIO
    if not 0 < args.ratio <= top:
        raise ParamsError(f"--ratio {args.ratio}; expected a percent in 1..{top} for mix.mode {params.mix.mode!r} (R=0 is the baseline stage)")
    if not 0 < args.keep <= 100:
        raise ParamsError(f"--keep {args.keep}; expected a percent of patients in 1..100")
    device = setup(params.runtime)
    with open_live(params.paths.live / run_id(args.ratio, args.seed, args.keep)) as live:
        run_ratio(params, args.ratio, args.seed, device, live, keep=args.keep)


if __name__ == "__main__":
    main()
