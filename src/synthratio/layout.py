"""Where every run's files live: one name per classifier run and per generator cohort, and the file names
inside a generator and a synthetic-scan folder, shared by the stages, the report and the tests (dvc.yaml
spells the same patterns from params.yaml). No torch here, so the report stage stays light."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from synthratio.config import Params

CLASSES_FILE = "classes.json"  # in a class-conditional generator: label i is classes[i]
TRAINING_PATIENTS_FILE = "training_patients.json"  # in a generator: sorted patient groups whose scans it learned


def synthetic_file(folder: Path, seed: int) -> Path:
    """The scan `generate` writes for `seed` into a class folder of the synthetic scans."""
    return folder / f"{seed:06d}.png"


def run_name(ratio: int, keep: int, generator: int | None = None) -> str:
    """Name of the classifier runs (every seed) at ratio R in regime keep on the scans of generator seed
    `generator` (None at R=0, the real-only baseline): one stage, one folder each."""
    return f"ratio_{ratio}_keep_{keep}" + ("" if generator is None else f"_gen_{generator}")


def classifier_path(params: Params, *, ratio: int, seed: int, keep: int, generator: int | None = None) -> Path:
    return params.paths.classifiers / run_name(ratio, keep, generator) / f"seed_{seed}.safetensors"


def predictions_path(params: Params, *, ratio: int, seed: int, keep: int, generator: int | None = None) -> Path:
    return params.paths.predictions / run_name(ratio, keep, generator) / f"seed_{seed}.csv"


def classifier_live_path(params: Params, *, ratio: int, seed: int, keep: int, generator: int | None = None) -> Path:
    return params.paths.live / run_name(ratio, keep, generator) / f"seed_{seed}"


def classifier_metrics_path(params: Params, ratio: int, keep: int, generator: int | None = None) -> Path:
    """Every seed's test metrics of one (R, keep, generator), a JSON list in sweep.seeds order."""
    return params.paths.metrics / "classifier" / f"{run_name(ratio, keep, generator)}.json"


def stage_name(ratio: int, keep: int, generator: int | None = None) -> str:
    """dvc.yaml's name of the stage that trains run_name(ratio, keep, generator)'s classifiers."""
    return f"baseline@{keep}" if ratio == 0 else f"train_classifier@{ratio}-{keep}-{generator}"


def detail_path(metric: Path) -> Path:
    """A stage's full figures (timings, counts, spreads) beside its DVC metric <name>.json: <name>.detail.json,
    tracked but not a metric."""
    return metric.with_suffix(".detail.json")


def cohort_name(keep: int, generator: int) -> str:
    """Name of the generator of cohort `keep` (the keep % of real CNV training patients it may see) trained
    from seed `generator` (one of sweep.generator_seeds: weight init, data order, training noise)."""
    return f"keep_{keep}_gen_{generator}"


@dataclass(frozen=True)
class GeneratorFiles:
    """What finetune@keep-generator, generate@... and evaluate_synthetic@... write for one generator."""

    model: Path  # diffusers pipeline folder
    checkpoints: Path  # resumable training state, beside the model (outside the DVC output)
    live: Path  # dvclive training curves
    synthetic: Path  # <CLASS>/<seed:06d>.png under it
    finetune_metrics: Path  # DVC metric: what experiments are compared on
    generate_detail: Path  # timings and counts (tracked, not a metric)
    synthetic_metrics: Path
    synthetic_detail: Path  # every figure of evaluate_synthetic, what the report's tables read
    samples_plot: Path
    memorization_plot: Path


def generator_files(params: Params, keep: int, generator: int) -> GeneratorFiles:
    name, paths = cohort_name(keep, generator), params.paths
    model = paths.diffusion_model / name
    return GeneratorFiles(
        model=model,
        checkpoints=model.with_name(f"{name}.checkpoints"),
        live=paths.live / f"finetune_{name}",
        synthetic=paths.synthetic / name,
        finetune_metrics=paths.metrics / "finetune" / f"{name}.json",
        generate_detail=detail_path(paths.metrics / "generate" / f"{name}.json"),
        synthetic_metrics=paths.metrics / "synthetic" / f"{name}.json",
        synthetic_detail=detail_path(paths.metrics / "synthetic" / f"{name}.json"),
        samples_plot=paths.plots / f"samples_{name}.png",
        memorization_plot=paths.plots / f"memorization_{name}.png",
    )
