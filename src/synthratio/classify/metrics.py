"""Test metrics of a classifier: accuracy alone saturates near 1.0 on OCT, so AUROC and log-loss
(which see the confidence of every prediction) come with it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support, roc_auc_score

__all__ = ["ECE_BINS", "classification_metrics", "expected_calibration_error"]

ECE_BINS = 15  # equal-width confidence bins (Guo et al. 2017)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of softmax `probs` (N, C) (Guo et al. 2017, "On Calibration of Modern Neural Networks", eq. 3):
    sum over `bins` equal-width bins of the top-class probability of |accuracy - mean confidence| weighted
    by the bin's share of the scans. Bins are right-closed, (k/bins, (k+1)/bins], the first one also takes 0."""
    if bins < 1:
        raise ValueError(f"bins={bins}; expected a positive number of bins")
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)  # sum of (hit - confidence) per bin
    return float(np.abs(gap).sum() / len(labels))


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], *, positive: str = "CNV"
) -> dict[str, float]:
    """accuracy, f1, precision, recall, auroc, log_loss and ece of softmax `probs` (N, C).

    Two classes: f1/precision/recall of `positive`, AUROC of its probability. More: macro averages and
    one-vs-rest macro AUROC. AUROC is NaN when the labels hold a single class (it is undefined there).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(labels), len(classes)):
        raise ValueError(
            f"probs shape {probs.shape}; expected (len(labels), len(classes)) = ({len(labels)}, {len(classes)})"
        )
    all_labels = list(range(len(classes)))
    binary = len(classes) == 2
    if binary and positive not in classes:
        raise ValueError(f"positive={positive!r}; expected one of {list(classes)}")
    pos = list(classes).index(positive) if binary else None

    predicted = probs.argmax(axis=1)
    # micro over the one label [pos] is the binary score of pos, and stays defined when a batch of
    # predictions or labels lacks one of the two classes
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels,
        predicted,
        labels=[pos] if binary else all_labels,
        average="micro" if binary else "macro",
        zero_division=0.0,
    )
    if len(np.unique(labels)) < 2:
        auroc = float("nan")
    elif binary:
        auroc = roc_auc_score(labels == pos, probs[:, pos])
    else:
        auroc = roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=all_labels)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "auroc": float(auroc),
        "log_loss": float(log_loss(labels, probs, labels=all_labels)),
        "ece": expected_calibration_error(labels, probs),
    }
