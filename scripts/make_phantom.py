"""Write the embedded default data set, the OCT phantom of params.yaml's `phantom` section, to paths.raw.

Run once on a fresh clone (the quick start does); data.dvc then tracks the folder like any real data set.
"""

import sys

from synthratio.config import load_params
from synthratio.data.phantom import write_phantom


def main() -> None:
    params = load_params()
    raw = params.paths.raw
    if raw.exists() and any(raw.iterdir()):
        print(f"{raw} already holds data; leaving it as it is")
        return
    counts = write_phantom(raw, params.phantom, progress=params.runtime.progress)
    total = sum(sum(per_class.values()) for per_class in counts.values())
    print(f"wrote {total} phantom scans to {raw}: {counts}", file=sys.stderr)


if __name__ == "__main__":
    main()
