"""Stage baseline@seed: the real-only classifier (R=0). It never reads synthetic data, so a new generator
does not rerun it."""

import argparse

from synthratio.classify.experiment import run_ratio
from synthratio.config import load_params
from synthratio.runtime import open_live, run_name, setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, required=True)
    seed = parser.parse_args().seed
    params = load_params()
    device = setup(params.runtime)
    with open_live(params.paths.live / run_name(0, seed)) as live:
        run_ratio(params, 0, seed, device, live)


if __name__ == "__main__":
    main()
