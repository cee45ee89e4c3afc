"""One point of the ratio sweep: train a classifier at ratio R, seed and real-data regime `keep`, test it on
real scans, save it all.

`keep` (the scarce-data regime) is the percent of the synthetic class's real training patients kept: a
patient-level subsample drawn from (keep, seed), so the baseline and every R of a regime and seed see the
same real scans. Batches keep the class make-up and steps of the full training set: the few kept real
scans of the class are drawn more often, and synthetic ones (R > 0) can stand in for the missing ones.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from synthratio.classify.metrics import classification_metrics
from synthratio.classify.models import build_classifier
from synthratio.classify.train import Split, predict_proba, train_classifier
from synthratio.config import Params, ParamsError, max_ratio
from synthratio.data.ingest import load_split
from synthratio.data.synthetic import load_synthetic, synthetic_seeds
from synthratio.runtime import load_safetensors, run_name, write_atomically, write_json

log = logging.getLogger(__name__)


def run_id(ratio: int, seed: int, keep: int = 100) -> str:
    """Name of one run's weights, predictions, metrics and curves (dvc.yaml spells the same pattern)."""
    return f"{run_name(ratio, seed)}_keep_{keep}"


def classifier_path(params: Params, ratio: int, seed: int, keep: int = 100) -> Path:
    return params.paths.classifiers / f"{run_id(ratio, seed, keep)}.safetensors"


def metrics_path(params: Params, ratio: int, seed: int, keep: int = 100) -> Path:
    return params.paths.metrics / "classifier" / f"{run_id(ratio, seed, keep)}.json"


def predictions_path(params: Params, ratio: int, seed: int, keep: int = 100) -> Path:
    return params.paths.predictions / f"{run_id(ratio, seed, keep)}.csv"


def kept_rows(groups: np.ndarray, labels: np.ndarray, label: int, keep: int, seed: int) -> np.ndarray:
    """Rows of a training split left in regime `keep`: every row of the other classes, and of class `label`
    the rows of round(keep% of its patient groups) groups (at least 1), drawn from (keep, seed)."""
    if not 0 < keep <= 100:
        raise ValueError(f"keep={keep}; expected a percent of patients in 1..100")
    ids = np.unique(groups[labels == label])
    chosen = np.random.default_rng([keep, seed]).permutation(ids)[: max(1, (keep * len(ids) + 50) // 100)]
    return np.flatnonzero((labels != label) | np.isin(groups, chosen))


def load_real(params: Params, split: str) -> Split:
    images, labels = load_split(params.paths.prepared, split, params.classifier.image_size)
    return Split(images=images, labels=labels)


def load_classifier(params: Params, seed: int, ratio: int, device: torch.device, keep: int = 100) -> torch.nn.Module:
    """A trained classifier from its safetensors file (never pickle)."""
    path = classifier_path(params, ratio, seed, keep)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: classifier weights not found (run stage baseline@{seed}-{keep})")
    model = build_classifier(params.classifier.arch, len(params.prepare.classes), params.classifier.image_size)
    model.load_state_dict(load_safetensors(path, device))
    return model.to(device).eval()


def check_run(params: Params, ratio: int, keep: int) -> None:
    """Refuse a (ratio, keep) the sweep cannot run, before any output is opened (stages take them from
    dvc.yaml's matrix, so they bypass params.yaml's own checks)."""
    top = max_ratio(params.mix.mode)
    if not 0 <= ratio <= top:
        raise ParamsError(f"--ratio {ratio}; expected a percent in 0..{top} for mix.mode {params.mix.mode!r}")
    if not 0 < keep <= 100:
        raise ParamsError(f"--keep {keep}; expected a percent of patients in 1..100")


def run_ratio(
    params: Params, ratio: int, seed: int, device: torch.device, live=None, keep: int = 100
) -> dict[str, float]:
    """Train at `ratio` % synthetic CNV per batch (params.mix.mode) on `keep` % of the real CNV patients,
    select on real val, score on real test; write outputs."""
    classes = params.prepare.classes
    synthetic_class = params.sweep.synthetic_class
    label = classes.index(synthetic_class)
    train, val, test = (load_real(params, split) for split in ("train", "val", "test"))
    index = pd.read_csv(params.paths.prepared / "index.csv")
    class_counts = np.bincount(train.labels, minlength=len(classes))
    if keep < 100:
        groups = index.loc[index["split"] == "train"].sort_values("row")["patient_group"].astype(str).to_numpy()
        rows = kept_rows(groups, train.labels, label, keep, seed)
        train = Split(images=np.asarray(train.images[rows]), labels=train.labels[rows])
    synthetic = None
    if ratio > 0:
        folder = params.paths.synthetic / synthetic_class
        synthetic = load_synthetic(folder, synthetic_seeds(params.generate), params.classifier.image_size)
    log.info(
        "classifier %s at R=%d%% (%s) seed %d keep %d%% on %s: %d real train, %d val, %d test, %d synthetic %s",
        params.classifier.arch, ratio, params.mix.mode, seed, keep, device, len(train.labels), len(val.labels),
        len(test.labels), 0 if synthetic is None else len(synthetic), synthetic_class,
    )
    result = train_classifier(
        train, val, synthetic, label, ratio, params.classifier, seed, device,
        live=live, progress=params.runtime.progress, mode=params.mix.mode, class_counts=class_counts.tolist(),
    )
    probabilities = predict_proba(result.model, test.images, device)
    metrics = classification_metrics(test.labels, probabilities, classes, positive=synthetic_class)
    metrics.update(
        ratio=ratio, seed=seed, keep=keep, best_epoch=result.best_epoch, n_test=int(len(test.labels)),
        n_train_real=int(len(train.labels)),
    )
    files = index.loc[index["split"] == "test"].sort_values("row")["file"].to_numpy()
    predictions = pd.DataFrame({"file": files, "label": test.labels})
    for i, name in enumerate(classes):
        predictions[f"prob_{name}"] = np.round(probabilities[:, i], 6)
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    write_atomically(classifier_path(params, ratio, seed, keep), lambda tmp: save_file(state, str(tmp)))
    write_atomically(predictions_path(params, ratio, seed, keep), lambda tmp: predictions.to_csv(tmp, index=False))
    write_json(metrics_path(params, ratio, seed, keep), metrics)
    return metrics

