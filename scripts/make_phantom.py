"""Write the embedded default data set, the OCT phantom of params.yaml's `phantom` section, to paths.raw.

Run once on a fresh clone (the quick start does); data.dvc then tracks the folder like any real data set.
"""

import argparse
import sys

from synthratio.config import load_params
from synthratio.data.phantom import write_phantom
from synthratio.runtime import set_progress


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()  # no options; --help says what the script does
    params = load_params()
    set_progress(params.runtime.progress)
    raw = params.paths.raw
    if raw.exists() and any(raw.iterdir()):
        print(f"{raw} already holds data; leaving it as it is")
        return
    counts = write_phantom(raw, params.phantom)
    total = sum(sum(per_class.values()) for per_class in counts.values())
    print(f"wrote {total} phantom scans to {raw}: {counts}", file=sys.stderr)


if __name__ == "__main__":
    main()
