"""Stage baseline@keep: the real-only classifiers (R=0, one per seed) on cohort `keep` of the real CNV
patients. They never read synthetic data, so a new generator does not rerun them."""

from synthratio.config import load_params, stage_arguments
from synthratio.runtime import run_stage


def main() -> str:
    args = stage_arguments(__doc__, generator=False)
    params = load_params()
    # imported once params.yaml is read and checked: torch, diffusers and sklearn take seconds to import
    from synthratio.classify.experiment import check_run, run_ratio
    from synthratio.runtime import setup

    check_run(params, 0, args.keep)
    device = setup(params.runtime)
    runs = run_ratio(params, 0, args.keep, device=device)
    return f"{len(runs)} seeds trained, mean test accuracy {sum(run['accuracy'] for run in runs) / len(runs):.4f}"


if __name__ == "__main__":
    run_stage(main)
