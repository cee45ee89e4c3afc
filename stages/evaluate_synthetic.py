"""Stage evaluate_synthetic: synthetic vs held-out real scans of the generator's class: FID, KID,
precision/recall/density/coverage (each with its real-vs-real floor), memorized share and a synthetic-vs-real
detector's AUROC, in the feature space of a classifier trained on real training scans only."""

import tempfile
from pathlib import Path

from synthratio.classify.experiment import load_classifier
from synthratio.config import load_params
from synthratio.data.synthetic import synthetic_file, synthetic_seeds
from synthratio.evaluation.evaluate import evaluate_synthetic, load_real_scans
from synthratio.evaluation.features import classifier_feature_fn
from synthratio.runtime import setup, write_json


def main() -> None:
    params = load_params()
    device = setup(params.runtime)
    config, target = params.evaluate, params.finetune.target_class
    # Real scans at the generator's size: both sets reach the encoder through the same resize, and pixel
    # distances compare like with like.
    real = load_real_scans(params.paths.prepared, config.real_split, params.finetune.image_size,
                           params.prepare.classes.index(target))
    files = [synthetic_file(params.paths.synthetic / target, seed) for seed in synthetic_seeds(params.generate)]
    encoder = load_classifier(params, seed=config.encoder_seed, ratio=0, device=device)
    feature_fn = classifier_feature_fn(encoder, params.classifier.image_size, device)
    with tempfile.TemporaryDirectory() as workdir:
        metrics = evaluate_synthetic(files, real, feature_fn, device, config, Path(workdir),
                                     memorization_plot=params.paths.plots / "memorization.png",
                                     progress=params.runtime.progress)
    metrics["real_split"] = config.real_split
    write_json(params.paths.metrics / "synthetic.json", metrics)


if __name__ == "__main__":
    main()
