"""One point of the ratio sweep: train a classifier per seed at ratio R in real-data regime `keep`, test them on
real scans, save it all.

`keep` (the regime) is the cohort of the synthetic classes' real training patients the classifier may see
(data/cohort.py): the same nested subset for the baseline, every R and every seed of the regime, and the one
its generators were trained on; its validation patients are cut the same way. Each R > 0 runs once per
generator seed (sweep.generator_seeds) on that generator's scans; R=0 reads none. Batches keep the class
make-up and steps of the full training set: the few kept real scans of a class are drawn more often, and synthetic
ones (R > 0) can stand in for them. Every class of sweep.synthetic_class gets its own synthetic scans at the
same R. In mix.mode data the cohort's left-out scans are replaced, one for one, by synthetic scans of its own
generator (R is then a share of the data, set by keep, not of each batch).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from synthratio.classify.curation import Curation, curate
from synthratio.classify.metrics import classification_metrics
from synthratio.classify.models import build_classifier
from synthratio.classify.train import LabelledImages, predict_proba, train_classifier
from synthratio.config import Params, ParamsError, max_ratio
from synthratio.data.cohort import cohort_of
from synthratio.data.prepared import load_prepared
from synthratio.data.synthetic import load_synthetic, synthetic_seeds
from synthratio.layout import (
    classifier_live_path,
    classifier_metrics_path,
    classifier_path,
    generator_files,
    predictions_path,
    stage_name,
)
from synthratio.runtime import load_safetensors, open_live, write_atomically, write_json

if TYPE_CHECKING:
    import dvclive

log = logging.getLogger(__name__)


def cohort_val(params: Params, keep: int) -> LabelledImages:
    """Cohort `keep`'s validation scans at the classifier's size: what its runs select epochs and curation
    thresholds on (a scarce regime has scarce validation patients too)."""
    val = cohort_of(params, keep, size=params.classifier.image_size, split="val")
    return LabelledImages(images=val.images, labels=val.labels)


def load_classifier(params: Params, *, seed: int, ratio: int, device: torch.device, keep: int) -> torch.nn.Module:
    """A trained classifier from its safetensors file (never pickle)."""
    path = classifier_path(params, ratio=ratio, seed=seed, keep=keep)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: classifier weights not found (run stage {stage_name(ratio, keep)})")
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


def synthetic_count(params: Params, ratio: int, keep: int, *, synthetic_class: str, n_real: int, n_full: int) -> int:
    """How many synthetic scans of `synthetic_class` a run mixes in: data mode fills ratio % of its n_full -
    n_real left-out scans; the other modes draw R % of its slots in every batch from its whole synthetic set."""
    if ratio == 0:
        return 0
    wanted = (ratio * (n_full - n_real) + 50) // 100 if params.mix.mode == "data" else params.generate.num_images
    if wanted > params.generate.num_images:
        raise ParamsError(
            f"mix.mode data fills the {wanted} left-out {synthetic_class} training scans of cohort "
            f"keep={keep}, but generate.num_images={params.generate.num_images}; raise it to at least {wanted}"
        )
    return wanted


def curated_seeds(params: Params, keep: int, generator: int, synthetic_class: str, *, device: torch.device) -> Curation:
    """The seeds of the synthetic `synthetic_class` scans of cohort `keep`'s generator `generator` that
    curation keeps: all of them when curate.real_quantile is 0, else those the R=0 classifier of
    curate.classifier_seed calls the class as surely as the cohort's real val scans."""
    seeds = synthetic_seeds(params.generate, params.finetune.target_classes.index(synthetic_class))
    if not params.curate.real_quantile:
        return Curation(kept=tuple(seeds), rejected=0, threshold=0.0)
    size = params.classifier.image_size
    label = params.prepare.classes.index(synthetic_class)
    val = cohort_val(params, keep)
    curation = curate(
        load_classifier(params, seed=params.curate.classifier_seed, ratio=0, device=device, keep=keep),
        load_synthetic(generator_files(params, keep, generator).synthetic / synthetic_class, seeds, size),
        seeds,
        val.images[val.labels == label],
        label=label,
        quantile=params.curate.real_quantile,
        device=device,
    )
    log.info(
        "curation kept %d of %d synthetic %s scans of cohort keep=%d, generator %d: p(%s) >= %.4f, the %g quantile "
        "of its real val",
        len(curation.kept),
        len(seeds),
        synthetic_class,
        keep,
        generator,
        synthetic_class,
        curation.threshold,
        params.curate.real_quantile,
    )
    return curation


@dataclass(frozen=True)
class RunData:
    """What every seed of one (R, keep) trains and is tested on."""

    train: LabelledImages  # the cohort's real training scans
    val: LabelledImages
    test: LabelledImages
    test_files: np.ndarray  # index.csv file of each test scan
    test_patients: np.ndarray  # its patient group
    synthetic: np.ndarray | None  # the synthetic scans mixed in, class by class of sweep.synthetic_class
    synthetic_labels: np.ndarray  # the class index of each
    synthetic_rejected: int  # synthetic scans curation left out
    class_counts: tuple[int, ...]  # the full training set's scans per class: the batches' make-up
    real_patients_of_class: int  # distinct real patients of the synthetic classes the runs see


def synthetic_labels_of(params: Params) -> list[int]:
    """The class indices of sweep.synthetic_class, in its order."""
    return [params.prepare.classes.index(name) for name in params.sweep.synthetic_classes]


def load_run_data(params: Params, ratio: int, keep: int, *, generator: int | None, device: torch.device) -> RunData:
    """The real scans of cohort `keep`, train and val, the whole test split, and the synthetic scans of each
    synthetic class that a run at `ratio` mixes in from generator `generator` (those curation keeps)."""
    cohort = cohort_of(params, keep, size=params.classifier.image_size)
    parts, labels, rejected = [], [], 0
    for synthetic_class, label in zip(params.sweep.synthetic_classes, synthetic_labels_of(params)):
        n_real = int((cohort.labels == label).sum())
        n_synthetic = synthetic_count(
            params, ratio, keep, synthetic_class=synthetic_class, n_real=n_real, n_full=cohort.class_counts[label]
        )
        if not n_synthetic:
            continue
        if generator is None:
            raise ValueError(f"ratio={ratio} mixes synthetic scans in: name the generator seed")
        curation = curated_seeds(params, keep, generator, synthetic_class, device=device)
        if len(curation.kept) < n_synthetic and params.mix.mode == "data":
            raise ParamsError(
                f"mix.mode data fills {n_synthetic} left-out {synthetic_class} scans of cohort keep={keep}, but "
                f"curation kept {len(curation.kept)} of generate.num_images={params.generate.num_images}; raise it"
            )
        folder = generator_files(params, keep, generator).synthetic / synthetic_class
        parts.append(load_synthetic(folder, curation.kept[:n_synthetic], params.classifier.image_size))
        labels.append(np.full(len(parts[-1]), label, dtype=np.int64))
        rejected += curation.rejected
    test = load_prepared(params.paths.prepared, "test", params.classifier.image_size)
    of_class = np.isin(cohort.labels, synthetic_labels_of(params))
    return RunData(
        train=LabelledImages(images=cohort.images, labels=cohort.labels),
        val=cohort_val(params, keep),
        test=LabelledImages(images=test.images, labels=test.labels),
        test_files=test.files,
        test_patients=test.patients,
        synthetic=np.concatenate(parts) if parts else None,
        synthetic_labels=np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64),
        synthetic_rejected=rejected,
        class_counts=cohort.class_counts,
        real_patients_of_class=len(np.unique(cohort.patients[of_class])),
    )


def run_seed(
    params: Params,
    data: RunData,
    *,
    ratio: int,
    seed: int,
    keep: int,
    generator: int | None = None,
    device: torch.device,
    live: dvclive.Live | None = None,
) -> dict:
    """Train one seed at `ratio` % synthetic (params.mix.mode) from generator `generator` (None at R=0),
    select on the cohort's real val, score on real test; write its weights and predictions; return its
    metrics."""
    classes, synthetic_labels = params.prepare.classes, synthetic_labels_of(params)
    n_synthetic = 0 if data.synthetic is None else len(data.synthetic)
    result = train_classifier(
        data.train,
        data.val,
        params.classifier,
        seed=seed,
        device=device,
        synthetic=data.synthetic,
        synthetic_labels=data.synthetic_labels,
        synthetic_classes=synthetic_labels,
        ratio=ratio,
        mode=params.mix.mode,
        class_counts=data.class_counts,
        live=live,
    )
    probabilities = predict_proba(result.model, data.test.images, device)
    # two classes: f1, recall and AUROC of the (first) synthetic class; more: macro averages
    positive = params.sweep.synthetic_classes[0]
    metrics = classification_metrics(data.test.labels, probabilities, classes, positive=positive)
    metrics.update(
        ratio=ratio,
        seed=seed,
        keep=keep,
        generator=generator,
        best_epoch=result.best_epoch,
        n_test=int(len(data.test.labels)),
        n_train_real=int(len(data.train.labels)),
        real_scans_of_class=int(np.isin(data.train.labels, synthetic_labels).sum()),
        real_patients_of_class=data.real_patients_of_class,
        synthetic_scans=n_synthetic,
        synthetic_rejected=data.synthetic_rejected,
        synthetic_share=round(float(result.synthetic_share), 6),
    )
    predictions = pd.DataFrame({"file": data.test_files, "patient": data.test_patients, "label": data.test.labels})
    for i, name in enumerate(classes):
        predictions[f"prob_{name}"] = np.round(probabilities[:, i], 6)
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    where = {"ratio": ratio, "seed": seed, "keep": keep, "generator": generator}
    write_atomically(classifier_path(params, **where), lambda tmp: save_file(state, str(tmp)))
    write_atomically(predictions_path(params, **where), lambda tmp: predictions.to_csv(tmp, index=False))
    return metrics


def run_ratio(
    params: Params, ratio: int, keep: int, *, generator: int | None = None, device: torch.device
) -> list[dict]:
    """Every seed of sweep.seeds at `ratio` on cohort `keep` with generator `generator`'s scans (None at
    R=0): one classifier each (dvclive curves under paths.live), then the seeds' metrics as one JSON list,
    written last so that it marks the stage done."""
    data = load_run_data(params, ratio, keep, generator=generator, device=device)
    log.info(
        "classifiers %s at R=%d%% (%s) keep %d%%, generator %s, seeds %s, on %s: %d real train (%d %s from %d "
        "patients), %d val, %d test, %d synthetic",
        params.classifier.arch,
        ratio,
        params.mix.mode,
        keep,
        generator,
        list(params.sweep.seeds),
        device,
        len(data.train.labels),
        int(np.isin(data.train.labels, synthetic_labels_of(params)).sum()),
        "/".join(params.sweep.synthetic_classes),
        data.real_patients_of_class,
        len(data.val.labels),
        len(data.test.labels),
        0 if data.synthetic is None else len(data.synthetic),
    )
    runs = []
    for seed in params.sweep.seeds:
        where = {"ratio": ratio, "seed": seed, "keep": keep, "generator": generator}
        with open_live(classifier_live_path(params, **where)) as live:
            runs.append(run_seed(params, data, **where, device=device, live=live))
    write_json(classifier_metrics_path(params, ratio, keep, generator), runs)
    return runs
