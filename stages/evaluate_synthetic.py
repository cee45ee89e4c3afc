"""Stage evaluate_synthetic: synthetic vs held-out real scans (FID, KID and their real-vs-real floor) in the
feature space of a classifier trained on real training scans only."""

import tempfile
from pathlib import Path

import numpy as np

from synthratio.classify.experiment import load_classifier
from synthratio.config import load_params
from synthratio.data.ingest import load_split
from synthratio.evaluation.distances import evaluate_synthetic
from synthratio.evaluation.features import classifier_feature_fn
from synthratio.runtime import setup, write_json


def main() -> None:
    params = load_params()
    device = setup(params.runtime)
    config, target = params.evaluate, params.finetune.target_class
    # Held-out real scans at the generator's size, so both sets reach the encoder through the same resize.
    images, labels = load_split(params.paths.prepared, config.real_split, params.finetune.image_size)
    real = np.asarray(images[labels == params.prepare.classes.index(target)])
    encoder = load_classifier(params, seed=config.encoder_seed, ratio=0, device=device)
    feature_fn = classifier_feature_fn(encoder, params.classifier.image_size, device)
    with tempfile.TemporaryDirectory() as workdir:
        metrics = evaluate_synthetic(params.paths.synthetic / target, real, feature_fn, device, config.min_images,
                                     config.kid_subset_size, config.inception_weights, workdir=Path(workdir))
    metrics["real_split"] = config.real_split
    write_json(params.paths.metrics / "synthetic.json", metrics)


if __name__ == "__main__":
    main()
