"""Test metrics of a classifier: accuracy alone saturates near 1.0 on OCT, so AUROC and log-loss
(which see the confidence of every prediction) come with it."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support, roc_auc_score

__all__ = ["classification_metrics"]


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, classes: Sequence[str], positive: str = "CNV"
) -> dict[str, float]:
    """accuracy, f1, precision, recall, auroc and log_loss of softmax `probs` (N, C).

    Two classes: f1/precision/recall of `positive`, AUROC of its probability. More: macro averages and
    one-vs-rest macro AUROC. AUROC is NaN when the labels hold a single class (it is undefined there).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(labels), len(classes)):
        raise ValueError(f"probs shape {probs.shape}; expected (len(labels), len(classes)) = ({len(labels)}, {len(classes)})")
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
    }
