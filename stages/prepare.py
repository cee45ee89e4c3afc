"""Stage prepare: the surveyed scans of every source -> patient-disjoint uint8 arrays at every size a consumer
needs, and metrics/data.json (counts and the shortcut audit)."""

from synthratio.config import load_params
from synthratio.runtime import run_stage

# what experiments on other data are compared on; the rest (timings, wedges, skipped files, duplicates and
# leaks dropped) is detail; patients_in_several_splits, which must be 0, stays in view
DATA_HEADLINE = ("scans", "patients", "patients_in_several_splits", "counts", "patients_per_split", "shortcuts")


def main() -> str:
    params = load_params()
    # imported once params.yaml is read and checked: torch, scipy and pandas take seconds to import
    from synthratio.data.ingest import prepare_surveyed
    from synthratio.data.sources import read_surveys
    from synthratio.runtime import setup, write_metrics

    setup(params.runtime)
    sizes = (params.finetune.image_size, params.classifier.image_size)
    surveys = read_surveys(params.paths.sources, params.paths.raw)
    summary = prepare_surveyed(surveys, params.paths.raw, params.paths.prepared, params.prepare, sizes=sizes)
    metrics = params.paths.metrics / "data.json"
    write_metrics(metrics, summary, DATA_HEADLINE)
    per_split = ", ".join(f"{split} {sum(counts.values())}" for split, counts in summary["counts"].items())
    rate = summary["scans_per_second"]
    return f"{summary['scans']} scans of {summary['patients']} patients ({per_split}), decoded at {rate} scans/s"


if __name__ == "__main__":
    run_stage(main)
