"""The PNG figures the stages write (matplotlib, headless); `dvc plots` draws the CSV tables beside them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # stages run headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from synthratio.runtime import write_atomically  # noqa: E402

if TYPE_CHECKING:  # annotations only: the report stage imports this module without torch
    from collections.abc import Mapping

    from synthratio.evaluation.memorization import Memorization

GRID_PAIRS = 8  # closest synthetic/train pairs shown per space in the memorization figure
STUDY_LABEL = "published study (Stable Diffusion, full Kermany): a reference, not comparable with these data"


def save_ratio_plot(
    summary: dict, table: pd.DataFrame, *, x_label: str, path: Path, study: dict[int, float] | None = None
) -> None:
    """Left: accuracy vs x per family, mean over seeds with its band. Right: the paired difference in the
    decision metric with its one-sided bounds, the -margin line the lower bound must clear, and R_max."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    margin, metric = summary["margin"], summary["metric"]
    for color, (name, part) in zip(colors, table.groupby("family", sort=False)):
        part = part.sort_values("x")
        left.fill_between(part["x"], part["accuracy_low"], part["accuracy_high"], color=color, alpha=0.15)
        left.plot(
            part["x"],
            part["accuracy"],
            "o-",
            color=color,
            label=f"{name}: mean over models, {summary['confidence']:.0%} band",
        )
        tested = part[part["x"] > 0]
        errors = np.vstack([tested["delta"] - tested["delta_lower"], tested["delta_upper"] - tested["delta"]])
        right.errorbar(tested["x"], tested["delta"], yerr=errors, fmt="o-", color=color, capsize=3, label=name)
        block = summary.get(name)
        if block is not None and block["r_max"] is not None:
            right.axvline(block["r_max"], color=color, ls="--", lw=1, label=f"{name}: R_max {block['r_max']}%")
    if metric == "accuracy" and study:
        left.plot(list(study), list(study.values()), "s:", color="grey", alpha=0.6, label=STUDY_LABEL)
    right.axhline(-margin, color="tab:red", lw=1, label=f"-margin ({margin:g}): lower bounds must stay above")
    right.axhline(0, color="black", lw=0.5)
    left.set(xlabel=x_label, ylabel="test accuracy (real scans)", title="Accuracy")
    right.set(
        xlabel=x_label,
        ylabel=f"{metric} difference to the reference (positive: better)",
        title=f"Paired difference, one-sided bounds at level {summary['alpha']:g} split over the regimes",
    )
    span = (0, float(table["x"].max()))  # both panels from R=0, so an R_max at the first R is not on the frame
    for ax in (left, right):
        ax.set_xlim(span[0] - 0.05 * span[1], span[1] * 1.05)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1, frameon=False)
    _save(fig, path)


def save_sample_grid(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, *, columns: int = 8) -> None:
    """Per class of `pairs` ({class: (real, synthetic)}), a row of real scans above a row of synthetic ones,
    at the generator's size (rows named by their class when there are several)."""
    rows = [
        (f"{kind} {name}" if len(pairs) > 1 else kind, images)
        for name, (real, synthetic) in pairs.items()
        for kind, images in (("real", real), ("synthetic", synthetic))
    ]
    columns = min(columns, *(len(images) for _, images in rows))
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.4 * columns, 1.6 * len(rows)), squeeze=False)
    for row, (name, images) in enumerate(rows):
        for col in range(columns):
            axes[row, col].imshow(images[col], cmap="gray", vmin=0, vmax=255)
            axes[row, col].axis("off")
        axes[row, 0].set_title(name, fontsize=9, loc="left")
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def save_memorization_grid(
    synthetic: np.ndarray, train: np.ndarray, spaces: dict[str, Memorization], *, path: Path, pairs: int = GRID_PAIRS
) -> None:
    """PNG of the closest synthetic/train pairs in each space: per space a row of synthetic scans (closest
    first, distance in red when at or below the threshold) above a row of their nearest training scans."""
    pairs = min(pairs, len(synthetic))
    fig = plt.figure(figsize=(1.5 * pairs, 3.6 * len(spaces)), layout="constrained")
    for panel, (space, result) in zip(np.atleast_1d(fig.subfigures(len(spaces), 1)), spaces.items()):
        panel.suptitle(
            f"{space}: threshold {result.threshold:.3g}, memorized {result.share:.1%} of synthetic "
            f"({result.share_floor:.1%} of unseen real)",
            fontsize=9,
        )
        axes = panel.subplots(2, pairs, squeeze=False)
        for col, row in enumerate(np.argsort(result.nearest.distance, kind="stable")[:pairs]):
            distance = result.nearest.distance[row]
            axes[0, col].imshow(synthetic[row], cmap="gray", vmin=0, vmax=255)
            axes[0, col].set_title(
                f"d={distance:.3g}", fontsize=7, color="tab:red" if distance <= result.threshold else "black"
            )
            axes[1, col].imshow(train[result.nearest.index[row]], cmap="gray", vmin=0, vmax=255)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, 0].set_ylabel("synthetic", fontsize=8)
        axes[1, 0].set_ylabel("nearest train", fontsize=8)
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
