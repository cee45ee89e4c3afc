"""Stage evaluate_synthetic@keep-generator: the synthetic scans of cohort `keep`'s generator of seed
`generator` against held-out real scans of the generator's class: FID, KID, precision/recall/density/coverage
(each beside its patient-disjoint real-vs-real floor), the copying test and a synthetic-vs-real detector's
AUROC, in the feature space of the cohort's own real-only classifier. With curation on, the scans curation
keeps, and how many it rejected. With several classes in finetune.target_class, each class against its own
real scans, keyed by class."""

import tempfile
from pathlib import Path

from synthratio.config import check_generator, load_params, stage_arguments
from synthratio.runtime import run_stage

# compared across generator variants, one column each per generator: the distance beside its real-vs-real floor,
# recall, the detector and the copying test (the other floors, the same for every generator of a regime, are in
# the detail file)
SYNTHETIC_HEADLINE = ("domain_fid", "domain_fid_floor", "domain_recall", "detector_auroc", "copying_p_features")


def main() -> str:
    args = stage_arguments(__doc__)
    params = load_params()
    check_generator(params, args.generator)
    # imported once params.yaml is read and checked: torch, diffusers and sklearn take seconds to import
    from synthratio.classify.experiment import curated_seeds, load_classifier
    from synthratio.data.cohort import cohort_of
    from synthratio.evaluation.evaluate import evaluate_synthetic, load_heldout
    from synthratio.evaluation.features import classifier_feature_fn
    from synthratio.layout import detail_path, generator_files, synthetic_file
    from synthratio.runtime import setup, write_json, write_metrics

    device = setup(params.runtime)
    config, targets, classes = params.evaluate, params.finetune.target_classes, params.prepare.classes
    files = generator_files(params, args.keep, args.generator)
    size = params.finetune.image_size
    # Real scans at the generator's size: both sets reach the encoder through the same resize, and pixel
    # distances compare like with like. Memorization compares with what this generator learned from.
    cohort = cohort_of(params, args.keep, size=size)
    encoder = load_classifier(params, seed=config.encoder_seed, ratio=0, device=device, keep=args.keep)
    feature_fn = classifier_feature_fn(encoder, params.classifier.image_size, device)
    per_class = {}
    for target in targets:
        label = classes.index(target)
        real = load_heldout(
            params.paths.prepared,
            config.real_split,
            size,
            label=label,
            train=cohort.images.select(cohort.labels == label),
        )
        curation = curated_seeds(
            params, args.keep, args.generator, target, device=device
        )  # the scans the sweep mixes in are scored
        synthetic = [synthetic_file(files.synthetic / target, seed) for seed in curation.kept]
        with tempfile.TemporaryDirectory() as workdir:
            metrics = evaluate_synthetic(
                synthetic,
                real,
                feature_fn,
                device=device,
                config=config,
                workdir=Path(workdir),
                # one figure per cohort (dvc.yaml's plot): with several classes, the first class's copies
                memorization_plot=files.memorization_plot if target == targets[0] else None,
                confidence=params.report.confidence,
            )
        per_class[target] = {**metrics, **curation.to_dict()}
    done = "; ".join(
        f"{target}: {m['curation_kept']} scans, domain FID {m['domain_fid']:.2f} (real floor "
        f"{m['domain_fid_floor']:.2f}), detector AUROC {m['detector_auroc']:.3f}"
        for target, m in per_class.items()
    )
    figures = {"keep": args.keep, "generator": args.generator, "real_split": config.real_split}
    if len(targets) == 1:  # one class: its figures at the top level, the columns every variant shares
        write_metrics(files.synthetic_metrics, {**figures, **per_class[targets[0]]}, SYNTHETIC_HEADLINE)
        return done
    write_json(detail_path(files.synthetic_metrics), {**figures, **per_class})
    headline = {name: {key: metrics[key] for key in SYNTHETIC_HEADLINE} for name, metrics in per_class.items()}
    write_json(files.synthetic_metrics, headline)
    return done


if __name__ == "__main__":
    run_stage(main)
