"""Does the real-only classifier read acquisition width? One table per prepare.geometry (issue 27).

For each geometry: prepare the sources (patient split as params.yaml's prepare section, val/test widened as
the agenda's real-data preset has them), train the R=0 classifier of params.yaml's `classifier` section with
each seed, and measure on the held-out scans
- accuracy and AUROC on val (where a choice may be made) and on test (reported, never chosen on);
- re-cut: every scan at least RECUT_FROM px wide made RECUT_WIDTH px wide and prepared again, the share of
  predictions that flip and the mean change of p(first class). `cut` keeps the centre columns (the same
  density, a narrower field: crop is unchanged by it by construction), `resample` resizes the scan (the same
  field, fewer A-scans: squeeze is nearly unchanged by it). A classifier that reads width changes its mind;
- width probe: logistic regression from the classifier's penultimate features to "wide" (>= WIDE px) within
  each class, grouped 5-fold by patient, its AUROC averaged over the classes; 0.5 = the features carry no
  width beyond what the class implies.
The geometry difference in accuracy has a patient-bootstrap interval (scans of a patient resampled together).

    python scripts/geometry_study.py --source sample=../shared/kermany-sample --source more=../shared/kermany-more
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict

from synthratio.classify.train import LabelledImages, predict_proba, train_classifier
from synthratio.config import GEOMETRIES, load_params
from synthratio.data.geometry import to_square
from synthratio.data.ingest import detect_wedges, mask_wedges, prepare_dataset, read_pixels
from synthratio.data.prepared import INDEX_FILE, load_prepared
from synthratio.runtime import set_progress

RECUT_FROM, RECUT_WIDTH = 768, 512  # px: scans this wide or wider are re-cut to this many centre columns
WIDE = 1024  # px: the width probe's "wide" (57 % of CNV and 34 % of NORMAL scans in the first sample)
BOOTSTRAP = 2000


def recut(path: Path, frame: int, size: int, geometry: str, mask: bool, how: str) -> np.ndarray:
    """The scan as prepare would square it after making it RECUT_WIDTH px wide: `cut` keeps its centre
    columns (the same density, a narrower field), `resample` resizes it (the same field, fewer A-scans)."""
    pixels = read_pixels(path, frame)
    wedge = detect_wedges(pixels)
    if mask and wedge.any():
        pixels = mask_wedges(pixels, wedge)
    if how == "cut":
        left = (pixels.shape[1] - RECUT_WIDTH) // 2
        pixels = np.ascontiguousarray(pixels[:, left : left + RECUT_WIDTH])
    else:
        pixels = np.asarray(Image.fromarray(pixels).resize((RECUT_WIDTH, pixels.shape[0]), Image.Resampling.LANCZOS))
    return to_square(pixels, size, geometry)


def features(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0)[:, None]
        return model.features(x).numpy()


def width_probe(feats: np.ndarray, wide: np.ndarray, labels: np.ndarray, patients: np.ndarray) -> float:
    """Mean over classes of the AUROC of "wide" from the features of that class's scans (logistic regression,
    5 folds grouped by patient): within a class, so that features which tell the class, which goes with
    width, do not count as width."""
    aurocs = []
    for label in np.unique(labels):
        rows = labels == label
        probe = LogisticRegression(max_iter=2000)
        folds = GroupKFold(5)
        scores = cross_val_predict(
            probe, feats[rows], wide[rows], groups=patients[rows], cv=folds, method="predict_proba"
        )
        aurocs.append(roc_auc_score(wide[rows], scores[:, 1]))
    return float(np.mean(aurocs))


def patient_bootstrap(correct: dict[str, np.ndarray], patients: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """Accuracy of each geometry (mean over seeds) under the same patient resamples."""
    ids, inverse = np.unique(patients, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids)) for _ in range(BOOTSTRAP)])
    weights = counts[:, inverse]  # (B, scans)
    return {g: weights @ hits / weights.sum(axis=1) for g, hits in correct.items()}


def study(sources: dict[str, Path], geometries: list[str], seeds: list[int], size: int, work: Path) -> pd.DataFrame:
    params = load_params()
    prepare = dataclasses.replace(params.prepare, val_fraction=0.3, test_fraction=0.35, workers=0)
    classifier = dataclasses.replace(params.classifier, image_size=size)
    device = torch.device("cpu")
    rows, test_hits = [], {}
    for geometry in geometries:
        out = work / geometry
        summary = prepare_dataset(sources, out, dataclasses.replace(prepare, geometry=geometry), sizes=(size,))
        index = pd.read_csv(out / INDEX_FILE)
        split = {name: load_prepared(out, name, size) for name in ("train", "val", "test")}
        test_rows = index[index["split"] == "test"].sort_values("row")
        cut = test_rows["width"].to_numpy() >= RECUT_FROM
        recut_images = {
            how: np.stack(
                [
                    recut(sources[s] / f, int(fr), size, geometry, prepare.mask_wedges, how)
                    for s, f, fr in zip(test_rows["source"][cut], test_rows["file"][cut], test_rows["frame"][cut])
                ]
            )
            for how in ("cut", "resample")
        }
        wide = (test_rows["width"].to_numpy() >= WIDE).astype(int)
        hits = []
        for seed in seeds:
            train = LabelledImages(np.asarray(split["train"].images), split["train"].labels)
            val = LabelledImages(np.asarray(split["val"].images), split["val"].labels)
            model = train_classifier(train, val, classifier, seed=seed, device=device).model
            row = {
                "geometry": geometry,
                "seed": seed,
                "shortcut_auroc": summary["shortcuts"]["train"]["shortcut_auroc"],
            }
            for name in ("val", "test"):
                probs = predict_proba(model, np.asarray(split[name].images), device)
                row[f"{name}_accuracy"] = float((probs.argmax(1) == split[name].labels).mean())
                row[f"{name}_auroc"] = float(roc_auc_score(split[name].labels == 0, probs[:, 0]))
                if name == "test":
                    hits.append(probs.argmax(1) == split[name].labels)
                    before = probs[cut]
            row["recut_scans"] = int(cut.sum())
            for how, images in recut_images.items():
                after = predict_proba(model, images, device)
                row[f"{how}_flipped"] = float((after.argmax(1) != before.argmax(1)).mean())
                row[f"{how}_p_shift"] = float(np.abs(after[:, 0] - before[:, 0]).mean())
            test = split["test"]
            row["width_probe_auroc"] = width_probe(
                features(model, np.asarray(test.images)), wide, test.labels, test.patients
            )
            rows.append(row)
            print(pd.DataFrame([row]).round(3).to_string(index=False, header=len(rows) == 1), flush=True)
        test_hits[geometry] = np.mean(hits, axis=0)
    table = pd.DataFrame(rows)
    boot = patient_bootstrap(test_hits, split["test"].patients)
    base = geometries[0]
    for geometry in geometries[1:]:
        diff = boot[geometry] - boot[base]
        low, high = np.percentile(diff, [2.5, 97.5])
        point = test_hits[geometry].mean() - test_hits[base].mean()
        interval = f"95% patient-bootstrap interval {low:+.3f} to {high:+.3f}"
        print(f"test accuracy {geometry} - {base}: {point:+.3f} ({interval})")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", action="append", required=True, metavar="NAME=FOLDER")
    parser.add_argument("--geometry", nargs="+", default=list(GEOMETRIES), choices=GEOMETRIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--size", type=int, default=32, help="px; params.yaml's classifier.image_size is the recipe's")
    parser.add_argument("--out", type=Path, help="csv of every (geometry, seed) row")
    args = parser.parse_args()
    set_progress(False)
    torch.set_num_threads(1)
    sources = {name: Path(folder) for name, folder in (item.split("=", 1) for item in args.source)}
    with tempfile.TemporaryDirectory() as work:
        table = study(sources, args.geometry, args.seeds, args.size, Path(work))
    summary = table.drop(columns="seed").groupby("geometry", sort=False).agg(["mean", "std"]).round(3)
    print(summary.T.to_string())
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
