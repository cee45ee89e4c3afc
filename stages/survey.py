"""Stage survey@<source>: one source of paths.raw -> paths.sources/<source>.csv, its scans checked and hashed."""

import argparse

from synthratio.config import load_params
from synthratio.runtime import run_stage


def main() -> str:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True, help="a source name of paths.raw")
    name = parser.parse_args().source
    params = load_params()
    from synthratio.data.sources import survey_source, write_survey
    from synthratio.runtime import setup

    setup(params.runtime)
    if name not in params.paths.raw:
        raise SystemExit(f"--source {name!r}: not a source of paths.raw {sorted(params.paths.raw)}")
    table = survey_source(params.paths.raw[name], params.prepare)
    write_survey(table, params.paths.sources / f"{name}.csv")
    problems = int((table["problem"] != "").sum())
    counts = table.loc[table["problem"] == "", "class"].value_counts().to_dict()
    return f"{len(table) - problems} scans {counts} of {params.paths.raw[name]}, {problems} to skip"


if __name__ == "__main__":
    run_stage(main)
