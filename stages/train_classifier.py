"""Stage train_classifier@R-keep: one classifier per seed with R % synthetic CNV (mix.mode), on cohort `keep`
of the real CNV patients and its generator's scans, tested on real scans."""

import argparse

from synthratio.config import ParamsError, load_params, run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--ratio", type=int, required=True, help="percent of synthetic CNV per batch, 1..100 (add: ..1000)"
    )
    parser.add_argument(
        "--keep", type=int, required=True, help="cohort: percent of the real CNV training patients, 1..100"
    )
    args = parser.parse_args()
    params = load_params()
    if args.ratio == 0:  # R=0 is the baseline stage, which never reads synthetic scans
        raise ParamsError("--ratio 0: run the baseline stage for R=0")
    # imported once params.yaml is read and checked: torch, diffusers and sklearn take seconds to import
    from synthratio.classify.experiment import check_run, run_ratio
    from synthratio.runtime import setup

    check_run(params, args.ratio, args.keep)
    device = setup(params.runtime)
    run_ratio(params, args.ratio, args.keep, device=device)


if __name__ == "__main__":
    run_stage(main)
