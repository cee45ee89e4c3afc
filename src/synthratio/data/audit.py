"""Shortcut audit: how much the acquisition alone (scan width, data source) tells a scan's class.

Every width (512-1536 px) is resized to one square size, so the aspect stays visible to a classifier; in
Kermany, width goes with class (1024 px: most CNV, a third of NORMAL scans) and with split (test has no
1024-px scan). A classifier can then learn acquisition, not anatomy. Per split:

- width_cramers_v: Cramér's V of the class x width table (scipy's association, method "cramer"); 0 = width
  says nothing of class, 1 = width fixes class. A table of one class or one width is 0.0 (no association is
  possible, and scipy would divide by zero). source_cramers_v: the same for class x source, only where the
  data come from several sources (folders/manifests, each with its own class mix).
- shortcut_auroc: AUROC of a lookup classifier that sees only the cues (width, and source where there are
  several), fit on train: per cell p(class | cell) = (count + 1) / (cell total + n_classes) (Laplace), an
  unseen cell gets train's class shares. Binary: the score of the split's first present class against the
  other; more classes: macro one-vs-rest over the classes present (probabilities renormalised over them).
  On train it is in-sample (the most the cue can tell), on val/test what a width-reading classifier carries
  over; 0.5 = no shortcut, None where the split has one class (or there is no train split).

Warnings (also logged): a held-out split has widths or sources train lacks; train shortcut_auroc >=
SHORTCUT_WARN; a class's width mix differs between train and a held-out split by total variation >= TV_WARN.
`patient_group` is not used: the audit counts scans, as the classifier sees them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd
from scipy.stats.contingency import association
from sklearn.metrics import roc_auc_score

from synthratio.data.kermany import SPLITS

log = logging.getLogger(__name__)

SHORTCUT_WARN = 0.6  # train AUROC from the cues alone; 0.5 is none, 0.6 = a cue a classifier will pick up
TV_WARN = 0.2  # total-variation distance of one class's width mix between train and a held-out split


def _cramers_v(rows: pd.Series, cols: pd.Series) -> float:
    table = pd.crosstab(rows, cols)
    return 0.0 if min(table.shape) < 2 else float(association(table.to_numpy(), method="cramer"))


def _lookup(train: pd.DataFrame, classes: Sequence[str]) -> tuple[pd.DataFrame, pd.Series]:
    """p(class | width, source) from train's counts, Laplace-smoothed, and train's class shares."""
    counts = pd.crosstab([train["width"], train["source"]], train["class"]).reindex(columns=classes, fill_value=0)
    proba = (counts + 1).div(counts.sum(axis=1) + len(classes), axis=0)
    return proba, train["class"].value_counts(normalize=True).reindex(classes, fill_value=0.0)


def _auroc(split: pd.DataFrame, proba: pd.DataFrame, prior: pd.Series, classes: Sequence[str]) -> float | None:
    present = [c for c in classes if c in set(split["class"])]
    if len(present) < 2:
        return None
    cells = pd.MultiIndex.from_frame(split[["width", "source"]])
    scores = proba.reindex(cells).fillna(prior)[present].to_numpy()
    scores = scores / scores.sum(axis=1, keepdims=True)
    y = split["class"].to_numpy()
    if len(present) == 2:
        return float(roc_auc_score(y == present[0], scores[:, 0]))
    return float(roc_auc_score(y, scores, multi_class="ovr", average="macro", labels=present))


def _unseen(name: str, split: pd.DataFrame, train: pd.DataFrame, column: str) -> list[str]:
    counts = split[column].value_counts().sort_index()
    what, why = ("{}-px scans", "geometry") if column == "width" else ("scans from source {!r}", "acquisition")
    return [
        f"{name} has {what.format(v)} ({n} of {len(split)}) that train has none of: a classifier never saw that {why}"
        for v, n in counts[~counts.index.isin(train[column].unique())].items()
    ]


def _width_drift(name: str, split: pd.DataFrame, train: pd.DataFrame) -> list[str]:
    mix = {k: pd.crosstab(f["class"], f["width"], normalize="index") for k, f in (("train", train), (name, split))}
    both = mix["train"].index.intersection(mix[name].index)
    widths = mix["train"].columns.union(mix[name].columns)
    a, b = (m.reindex(index=both, columns=widths, fill_value=0.0) for m in mix.values())
    tv = 0.5 * (a - b).abs().sum(axis=1)
    shares = {k: m.round(2).rename(columns=str) for k, m in zip(("train", name), (a, b))}
    return [
        f"{c}: width mix differs between train and {name} (TV {tv[c]:.2f}): train {shares['train'].loc[c].to_dict()}"
        f", {name} {shares[name].loc[c].to_dict()}; a classifier reading width meets another class/width link"
        for c in tv.index[tv >= TV_WARN]
    ]


def shortcut_audit(frame: pd.DataFrame, classes: Sequence[str]) -> dict:
    """The shortcut audit of `frame` (one row per scan: split, class, width, source, patient_group):
    {"headline": {split: {width_cramers_v, shortcut_auroc[, source_cramers_v]}, "warnings": [...]},
     "detail": {"cues": [...], split: {scans_by_width, scans_by_source, class_share_by_source}}}."""
    classes = list(classes)
    unknown = sorted(set(frame["class"]) - set(classes))
    if unknown:
        raise ValueError(f"classes {unknown} are not in {classes}")
    several = frame["source"].nunique() > 1
    cues = ["width", "source"] if several else ["width"]
    splits = {s: frame[frame["split"] == s] for s in SPLITS if (frame["split"] == s).any()}
    train = splits.get("train")
    lookup = None if train is None else _lookup(train, classes)
    headline: dict = {}
    detail: dict = {"cues": cues}
    warnings: list[str] = []
    for name, split in splits.items():
        auroc = None if lookup is None else _auroc(split, *lookup, classes)
        headline[name] = {
            "width_cramers_v": round(_cramers_v(split["class"], split["width"]), 3),
            "shortcut_auroc": None if auroc is None else round(auroc, 3),
        }
        if several:
            headline[name]["source_cramers_v"] = round(_cramers_v(split["class"], split["source"]), 3)
        by_width = pd.crosstab(split["class"], split["width"]).reindex(classes, fill_value=0).rename(columns=str)
        by_source = pd.crosstab(split["source"], split["class"]).reindex(columns=classes, fill_value=0)
        detail[name] = {
            "scans_by_width": by_width.to_dict(orient="index"),
            "scans_by_source": by_source.to_dict(orient="index"),
            "class_share_by_source": by_source.div(by_source.sum(axis=1), axis=0).round(3).to_dict(orient="index"),
        }
        if train is not None and name != "train":
            warnings += [w for column in cues for w in _unseen(name, split, train, column)]
            warnings += _width_drift(name, split, train)
    train_auroc = headline.get("train", {}).get("shortcut_auroc")
    if train_auroc is not None and train_auroc >= SHORTCUT_WARN:
        warnings.insert(
            0,
            f"train: {' and '.join(cues)} alone {'tell' if several else 'tells'} the class with AUROC "
            f"{train_auroc:.2f}; a classifier can learn acquisition, not anatomy",
        )
    for warning in warnings:
        log.warning("shortcut audit: %s", warning)
    return {"headline": {**headline, "warnings": warnings}, "detail": detail}
