"""One point of the ratio sweep: train a classifier at ratio R and seed, test it on real scans, save it all."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from synthratio.classify.metrics import classification_metrics
from synthratio.classify.models import build_classifier
from synthratio.classify.train import Split, predict_proba, train_classifier
from synthratio.config import Params
from synthratio.data.ingest import load_split
from synthratio.data.synthetic import load_synthetic, synthetic_seeds
from synthratio.runtime import run_name, write_atomically, write_json

log = logging.getLogger(__name__)


def classifier_path(params: Params, ratio: int, seed: int) -> Path:
    return params.paths.classifiers / f"{run_name(ratio, seed)}.safetensors"


def metrics_path(params: Params, ratio: int, seed: int) -> Path:
    return params.paths.metrics / "classifier" / f"{run_name(ratio, seed)}.json"


def predictions_path(params: Params, ratio: int, seed: int) -> Path:
    return params.paths.predictions / f"{run_name(ratio, seed)}.csv"


def load_real(params: Params, split: str) -> Split:
    images, labels = load_split(params.paths.prepared, split, params.classifier.image_size)
    return Split(images=images, labels=labels)


def load_classifier(params: Params, seed: int, ratio: int, device: torch.device) -> torch.nn.Module:
    """A trained classifier from its safetensors file (never pickle)."""
    path = classifier_path(params, ratio, seed)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: classifier weights not found (run stage baseline@{seed})")
    model = build_classifier(params.classifier.arch, len(params.prepare.classes))
    model.load_state_dict(load_file(str(path), device=str(device)))
    return model.to(device).eval()


def run_ratio(params: Params, ratio: int, seed: int, device: torch.device, live=None) -> dict[str, float]:
    """Train at `ratio` % synthetic CNV per batch, select on real val, score on real test; write outputs."""
    classes = params.prepare.classes
    synthetic_class = params.sweep.synthetic_class
    train, val, test = (load_real(params, split) for split in ("train", "val", "test"))
    synthetic = None
    if ratio > 0:
        folder = params.paths.synthetic / synthetic_class
        synthetic = load_synthetic(folder, synthetic_seeds(params.generate), params.classifier.image_size)
    log.info(
        "classifier %s at R=%d%% seed %d on %s: %d real train, %d val, %d test, %d synthetic %s",
        params.classifier.arch, ratio, seed, device, len(train.labels), len(val.labels), len(test.labels),
        0 if synthetic is None else len(synthetic), synthetic_class,
    )
    result = train_classifier(
        train, val, synthetic, classes.index(synthetic_class), ratio, params.classifier, seed, device,
        live=live, progress=params.runtime.progress,
    )
    probabilities = predict_proba(result.model, test.images, device)
    metrics = classification_metrics(test.labels, probabilities, classes, positive=synthetic_class)
    metrics.update(ratio=ratio, seed=seed, best_epoch=result.best_epoch, n_test=int(len(test.labels)))

    index = pd.read_csv(params.paths.prepared / "index.csv")
    files = index.loc[index["split"] == "test"].sort_values("row")["file"].to_numpy()
    predictions = pd.DataFrame({"file": files, "label": test.labels})
    for i, name in enumerate(classes):
        predictions[f"prob_{name}"] = np.round(probabilities[:, i], 6)
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    write_atomically(classifier_path(params, ratio, seed), lambda tmp: save_file(state, str(tmp)))
    write_atomically(predictions_path(params, ratio, seed), lambda tmp: predictions.to_csv(tmp, index=False))
    write_json(metrics_path(params, ratio, seed), metrics)
    return metrics

