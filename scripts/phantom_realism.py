"""How close the OCT phantom is to real scans: calibration statistics and three realism figures.

    python scripts/phantom_realism.py --calibrate   # re-measure the real sample into phantom_calibration.json
    python scripts/phantom_realism.py               # print the realism table (a few minutes on two CPU cores)

The table: (a) a simple_cnn trained to tell phantom from real scans at 64 px, patient-disjoint held-out
accuracy and AUROC (0.5: indistinguishable); (b) FID between phantom and real scans in the feature space of
a simple_cnn trained on real CNV vs NORMAL, beside the real-vs-real floor; (c) CNV vs NORMAL accuracy of
simple_cnn trained and tested on the phantom at 32 and 64 px (patient-disjoint), to set beside the same
task on real scans. Only numbers leave the real sample, never images.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

from synthratio.classify.train import LabelledImages, predict_proba, train_classifier
from synthratio.config import ClassifierConfig, PhantomConfig
from synthratio.data.calibration import CALIBRATION_FILE, measure
from synthratio.data.ingest import detect_wedges, mask_wedges
from synthratio.data.phantom import LABELS, write_phantom
from synthratio.evaluation.distances import feature_distances

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("SYNTHRATIO_KERMANY_SAMPLE", REPO.parent / "shared" / "kermany-sample"))
CALIBRATION = REPO / "src" / "synthratio" / "data" / CALIBRATION_FILE
SIZE = (512, 496)  # the phantom's default scan size; real scans are resized to it before measuring
TOLERANCE = {  # absolute: how far the phantom's mean may sit from the real one (tests/data/test_phantom.py)
    "wedge": 0.15,
    "wedge_area": 0.03,
    "wedge_top": 0.2,
    "vitreous_p10": 4.0,
    "vitreous_p50": 5.0,
    "vitreous_p90": 8.0,
    "retina_p10": 10.0,
    "retina_p50": 8.0,
    "retina_p90": 10.0,
    "choroid_p10": 10.0,
    "choroid_p50": 15.0,
    "choroid_p90": 15.0,
    "vitreous_cv": 0.1,
    "vitreous_acf_x": 0.08,
    "vitreous_acf_y": 0.08,
    "retina_speckle": 0.03,
    "thickness": 12.0,
    "curvature": 0.2,
    "rpe_row": 0.05,
}


def real_scans(label: str) -> tuple[list[Image.Image], list[str]]:
    """The sample's scans of one class (grayscale) and their patient ids, in MANIFEST order."""
    with open(SAMPLE / "MANIFEST.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["class"] == label]
    return [Image.open(SAMPLE / row["path"]).convert("L") for row in rows], [row["patient_id"] for row in rows]


def calibrate(path: Path) -> dict:
    out: dict = {"source": "kermany-sample (MANIFEST.csv)", "size": list(SIZE), "tolerance": TOLERANCE}
    for label in LABELS:
        images, _ = real_scans(label)
        stats = measure(np.asarray(image.resize(SIZE, Image.Resampling.BILINEAR)) for image in images)
        widths = np.array([image.width for image in images])
        stats["width"] = float(widths.mean())
        for w in (384, 512, 768, 1024, 1536):
            stats[f"width_{w}_share"] = float(np.mean(widths == w))
        out[label] = {key: round(value, 4) for key, value in stats.items()}
    path.write_text(json.dumps(out, indent=1) + "\n")
    return out


def _square(images: list[Image.Image], size: int) -> np.ndarray:
    return np.stack([np.asarray(image.resize((size, size), Image.Resampling.LANCZOS)) for image in images])


def _patient_split(ids: list[str], seed: int) -> np.ndarray:
    """0 train, 1 val, 2 test per scan: 60/20/20 of the patients."""
    patients = sorted(set(ids))
    order = np.random.default_rng(seed).permutation(len(patients))
    fractions = {patients[i]: rank / len(patients) for rank, i in enumerate(order)}
    part = {p: 0 if f < 0.6 else 1 if f < 0.8 else 2 for p, f in fractions.items()}
    return np.array([part[i] for i in ids])


def _train(images: np.ndarray, labels: np.ndarray, part: np.ndarray, size: int, seed: int = 0):
    config = ClassifierConfig(
        arch="simple_cnn", image_size=size, batch_size=32, epochs=10, learning_rate=2e-3, weight_decay=1e-4
    )
    train, val = (LabelledImages(images[part == k], labels[part == k]) for k in (0, 1))
    result = train_classifier(train, val, config, seed=seed, device=torch.device("cpu"))
    probs = predict_proba(result.model, images[part == 2], torch.device("cpu"))[:, 1]
    test = labels[part == 2]
    return result.model, float(((probs > 0.5) == test).mean()), float(roc_auc_score(test, probs))


def _load_phantom(root: Path, split: str, label: str, size: int) -> tuple[np.ndarray, list[str]]:
    paths = sorted((root / split / label).glob("*.jpeg"))
    return _square([Image.open(p) for p in paths], size), [p.name.split("-")[1] for p in paths]


def realism() -> None:
    torch.set_num_threads(1)
    # Real: the sample, patient-disjoint 60/20/20. Phantom: written as the pipeline writes it (JPEG).
    real = {label: real_scans(label) for label in LABELS}
    config = PhantomConfig(
        seed=0,
        patients={"train": 90, "val": 30, "test": 30},
        scans_per_patient=2,
        widths=(SIZE[0],),
        height=SIZE[1],
        classes=LABELS,
    )
    with tempfile.TemporaryDirectory() as tmp:
        write_phantom(Path(tmp) / "raw", config)
        phantom = {
            (s, label, size): _load_phantom(Path(tmp) / "raw", s, label, size)
            for s in ("train", "val", "test")
            for label in LABELS
            for size in (32, 64)
        }
    rows: list[tuple[str, str]] = []

    # (a) phantom vs real at 64 px
    real_images = np.concatenate([_square(real[label][0], 64) for label in LABELS])
    real_ids = sum((real[label][1] for label in LABELS), [])
    real_part = _patient_split(real_ids, seed=0)
    real_class = np.concatenate([np.full(len(real[label][0]), i) for i, label in enumerate(LABELS)])
    ph_images, ph_part = [], []
    for k, s in enumerate(("train", "val", "test")):
        for label in LABELS:
            images = phantom[(s, label, 64)][0]
            ph_images.append(images)
            ph_part.append(np.full(len(images), k))
    ph_images, ph_part = np.concatenate(ph_images), np.concatenate(ph_part)
    images = np.concatenate([real_images, ph_images])
    source = np.concatenate([np.zeros(len(real_images), int), np.ones(len(ph_images), int)])
    part = np.concatenate([real_part, ph_part])
    _, acc, auc = _train(images, source, part, 64)
    rows.append(("(a) phantom-vs-real accuracy / AUROC, 64 px (0.5 = indistinguishable)", f"{acc:.3f} / {auc:.3f}"))
    # the same with wedges masked on both sides (as prepare can): are the wedges what gives the phantom away?
    masked = np.stack([mask_wedges(x, detect_wedges(x)) for x in images])
    _, acc, auc = _train(masked, source, part, 64)
    rows.append(("(a) the same, wedges masked at 64 px on both sides", f"{acc:.3f} / {auc:.3f}"))

    # (b) FID in the feature space of a real CNV-vs-NORMAL classifier, against the real-vs-real floor
    model, real_acc, real_auc = _train(real_images, real_class, real_part, 64)
    model.eval()
    with torch.no_grad():
        feats = lambda x: model.features(torch.from_numpy(x).float().div(255).unsqueeze(1)).numpy()  # noqa: E731
        held_out = feats(real_images[real_part > 0])
        ph_feats = feats(ph_images[ph_part > 0])
    held_out_patients = np.asarray(real_ids)[real_part > 0]  # the floor's halves keep patients apart
    d = feature_distances(ph_feats, held_out, held_out_patients, kid_subset_size=50)
    rows.append(("(b) FID phantom vs real (real CNV/NORMAL classifier features)", f"{d['fid']:.2f}"))
    rows.append(("(b) FID real vs real floor", f"{d['fid_floor']:.2f}"))
    rows.append(("(b) n compared per side", f"{d['n_compared']}"))
    rows.append(
        (
            "    real CNV vs NORMAL accuracy / AUROC, 64 px (sample, patient-disjoint)",
            f"{real_acc:.3f} / {real_auc:.3f}",
        )
    )

    # (c) CNV vs NORMAL on the phantom
    for size in (32, 64):
        images, labels, part = [], [], []
        for k, s in enumerate(("train", "val", "test")):
            for i, label in enumerate(LABELS):
                x = phantom[(s, label, size)][0]
                images.append(x)
                labels.append(np.full(len(x), i))
                part.append(np.full(len(x), k))
        _, acc, auc = _train(np.concatenate(images), np.concatenate(labels), np.concatenate(part), size)
        rows.append((f"(c) phantom CNV vs NORMAL accuracy / AUROC, {size} px", f"{acc:.3f} / {auc:.3f}"))

    width = max(len(name) for name, _ in rows)
    print(f"{'figure'.ljust(width)}  value")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibrate", action="store_true", help=f"re-measure the real sample into {CALIBRATION}")
    args = parser.parse_args()
    if not (SAMPLE / "MANIFEST.csv").is_file():
        raise SystemExit(f"{SAMPLE}: no MANIFEST.csv; set SYNTHRATIO_KERMANY_SAMPLE to the real sample's folder")
    if args.calibrate:
        out = calibrate(CALIBRATION)
        print(f"wrote {CALIBRATION} ({int(out['CNV']['n'])} CNV, {int(out['NORMAL']['n'])} NORMAL scans)")
    else:
        realism()


if __name__ == "__main__":
    main()
