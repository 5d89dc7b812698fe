"""Figures of one run (learning curves, confusion matrix, misclassified images) and of a
comparison of runs (heatmap, overlaid curves).

Built on matplotlib's object API: no pyplot state, no display needed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.names import Metric

if TYPE_CHECKING:
    from pipeline.reporting.comparison import Comparison


def warm_up() -> None:
    """Draw and save a small figure: the first one in a process loads the fonts and the Agg
    renderer (about a second), which the run recorder does while it would be idle."""
    import io

    fig = Figure(figsize=(2, 2), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label="x")
    ax.imshow(np.zeros((2, 2)), cmap="Blues")
    ax.set_title("warm-up")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png")


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
    for ax, metric in zip(fig.subplots(1, 2), (Metric.LOSS, Metric.ACCURACY), strict=True):
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


def heatmap_figure(comparison: Comparison) -> Figure | None:
    """Valid and test accuracy over the two most varied settings (one, if only one varies)."""
    finished = comparison.table[comparison.table["status"] == "FINISHED"]
    if finished.empty or not comparison.varied:
        return None
    rows = comparison.varied[0]
    cols = comparison.varied[1] if len(comparison.varied) > 1 else None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for ax, metric in zip(
        fig.subplots(1, 2), (Metric.BEST_VAL_ACCURACY, Metric.TEST_ACCURACY), strict=True
    ):
        grid = (
            finished.pivot_table(index=rows, columns=cols, values=metric, aggfunc="mean")
            if cols
            else finished.groupby(rows)[metric].mean().to_frame(metric)
        )
        values = grid.to_numpy(dtype=float)
        image = ax.imshow(values, cmap="viridis", aspect="auto")
        middle = np.nanmean([np.nanmin(values), np.nanmax(values)])
        for (i, j), value in np.ndenumerate(values):
            if not np.isnan(value):
                colour = "black" if value > middle else "white"  # readable on viridis
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", color=colour, fontsize=8)
        ax.set_yticks(range(len(grid.index)), [str(v) for v in grid.index])
        ax.set_xticks(range(len(grid.columns)), [str(v) for v in grid.columns])
        ax.set_ylabel(rows)
        ax.set_xlabel(cols or "")
        ax.set_title(
            "valid accuracy (kept epoch)" if metric.startswith("best") else "test accuracy"
        )
        fig.colorbar(image, ax=ax)
    return fig


def curves_figure(comparison: Comparison) -> Figure | None:
    """Every run's loss and accuracy per epoch: valid solid, train dashed, one colour per run.

    The loss is the penalty-free `data_loss` where every run has it (Keras' `loss` includes
    the L2 penalty, which would set L2 runs apart for no reason of fit)."""
    if not comparison.curves:
        return None
    penalty_free = all(h[Metric.DATA_LOSS].notna().any() for h in comparison.curves.values())
    metrics = (Metric.DATA_LOSS if penalty_free else Metric.LOSS, Metric.ACCURACY)
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    colours = iter(_colours(len(comparison.curves)))
    by_id = comparison.table.set_index("run_id")
    for run_id, history in comparison.curves.items():
        colour = next(colours)
        label = comparison.label(by_id.loc[run_id])
        for ax, metric in zip(axes, metrics, strict=True):
            ax.plot(history.index, history[f"val_{metric}"], color=colour, label=label)
            ax.plot(history.index, history[metric], color=colour, linestyle="--", alpha=0.5)
    for ax, metric in zip(axes, metrics, strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric} (valid solid, train dashed)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    return fig


def _colours(n: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]


def comparison_figures(comparison: Comparison) -> dict[str, Figure]:
    """The figures of a comparison that has something to show, by name."""
    made = {"heatmap": heatmap_figure(comparison), "learning_curves": curves_figure(comparison)}
    return {name: fig for name, fig in made.items() if fig is not None}
