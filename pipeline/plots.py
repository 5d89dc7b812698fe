"""Figures for a run. Built on matplotlib's object API (no pyplot state, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def confusion_matrix_figure(confusion: np.ndarray, classes: Sequence[str]) -> Figure:
    """Counts, true letter by row and predicted by column, with row-normalised shading."""
    fig = Figure(figsize=(6, 5.5), layout="constrained")
    ax = fig.subplots()
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if rates[i, j] > 0.5 else "black",
        )
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes)
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Test confusion matrix")
    fig.colorbar(image, ax=ax, label="fraction of true letter")
    return fig


def learning_curves_figure(history: pd.DataFrame, best_epoch: int | None = None) -> Figure:
    """Loss and accuracy per epoch, train against valid; a line marks the kept epoch."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        ax.plot(history.index, history[metric], marker="o", label="train")
        if f"val_{metric}" in history:
            ax.plot(history.index, history[f"val_{metric}"], marker="o", label="valid")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", label=f"kept (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def misclassified_figure(
    images: np.ndarray,
    labels: np.ndarray,
    predictions: np.ndarray,
    classes: Sequence[str],
    limit: int = 36,
) -> Figure:
    """A grid of the first `limit` wrong test predictions, titled 'pred X / true Y'."""
    wrong = np.flatnonzero(predictions != labels)[:limit]
    cols = 6
    rows = max(1, -(-len(wrong) // cols))
    fig = Figure(figsize=(cols * 1.4, rows * 1.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, wrong, strict=False):
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"pred {classes[predictions[i]]} / true {classes[labels[i]]}", fontsize=7)
    if len(wrong) == 0:
        axes[0].set_title("no misclassified images")
    fig.suptitle(f"{int((predictions != labels).sum())} misclassified test images")
    return fig
