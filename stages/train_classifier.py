"""Stage train_classifier@R-keep-generator: one classifier per seed with R % synthetic CNV (mix.mode), on
cohort `keep` of the real CNV patients and the scans of its generator of seed `generator`, tested on real
scans."""

from synthratio.config import ParamsError, check_generator, load_params, stage_arguments
from synthratio.runtime import run_stage


def main() -> str:
    args = stage_arguments(__doc__, ratio=True)
    params = load_params()
    check_generator(params, args.generator)
    if args.ratio == 0:  # R=0 is the baseline stage, which never reads synthetic scans
        raise ParamsError("--ratio 0: run the baseline stage for R=0")
    # imported once params.yaml is read and checked: torch, diffusers and sklearn take seconds to import
    from synthratio.classify.experiment import check_run, run_ratio
    from synthratio.runtime import setup

    check_run(params, args.ratio, args.keep)
    device = setup(params.runtime)
    runs = run_ratio(params, args.ratio, args.keep, generator=args.generator, device=device)
    return f"{len(runs)} seeds trained, mean test accuracy {sum(run['accuracy'] for run in runs) / len(runs):.4f}"


if __name__ == "__main__":
    run_stage(main)
