"""Stage prepare: raw scans -> patient-disjoint uint8 arrays at every size a consumer needs, and metrics/data.json."""

from synthratio.config import load_params, run_stage


def main() -> None:
    params = load_params()
    # imported once params.yaml is read and checked: torch, scipy and pandas take seconds to import
    from synthratio.data.ingest import prepare_dataset
    from synthratio.runtime import setup, write_json

    setup(params.runtime)
    sizes = (params.finetune.image_size, params.classifier.image_size)
    summary = prepare_dataset(params.paths.raw, params.paths.prepared, params.prepare, sizes, params.runtime.progress)
    write_json(params.paths.metrics / "data.json", summary)


if __name__ == "__main__":
    run_stage(main)
