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
    limit: int = 48,
) -> Figure:
    """The first `limit` wrong test predictions, each captioned 'predicted / true'.

    Drawn as one mosaic image in one axes: a grid of 48 subplots takes matplotlib ten times
    longer to lay out and save (2 s), which a run would spend on every evaluation.
    """
    wrong = np.flatnonzero(predictions != labels)[:limit]
    cols = 8
    rows = max(1, -(-len(wrong) // cols))
    size, gap = images.shape[1], 12  # the gap under each image holds its caption
    mosaic = np.full((rows * (size + gap), cols * (size + 2)), 255, dtype=np.uint8)
    fig = Figure(figsize=(cols * 0.9, rows * 1.1 + 0.4), layout="constrained")
    ax = fig.subplots()
    for k, i in enumerate(wrong):
        top, left = (k // cols) * (size + gap), (k % cols) * (size + 2)
        mosaic[top : top + size, left : left + size] = images[i]
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    for k, i in enumerate(wrong):
        top, left = (k // cols) * (size + gap), (k % cols) * (size + 2)
        ax.text(
            left + size / 2,
            top + size + gap / 2,
            f"{classes[predictions[i]]} / {classes[labels[i]]}",
            ha="center",
            va="center",
            fontsize=7,
        )
    ax.axis("off")
    total = int((predictions != labels).sum())
    shown = f"first {len(wrong)} of {total}" if total > len(wrong) else f"{total}"
    fig.suptitle(f"Misclassified test images ({shown}), predicted / true", fontsize=9)
    return fig
