"""Figures of one run (data samples, learning curves, confusion matrix, misclassified images:
drawn by the run recorder from `drawings`) and of a comparison of runs (a grid's heatmap or a
search's valid-against-test scatter, overlaid curves).

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


def samples_figure(mosaic: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    """A data card's sample images: its mosaic, a row of square images per letter."""
    size = mosaic.shape[0] // len(classes)
    per_letter = mosaic.shape[1] // size
    fig = Figure(figsize=(per_letter * 0.6 + 0.6, len(classes) * 0.6), layout="constrained")
    ax = fig.subplots()
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255)
    ax.set_yticks([(r + 0.5) * size for r in range(len(classes))], classes)
    ax.set_xticks([])
    ax.set_title(title)
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


# More distinct values than this on a heatmap axis: the runs are a search's cloud, not a grid,
# and a heatmap of them is a diagonal of unreadable cells.
GRID_MAX = 12
# Curves drawn in colour, with a legend entry; the others are thin and grey.
CURVES_NAMED = 8


def is_grid(comparison: Comparison) -> bool:
    """Whether the finished runs sit on a grid of their two most varied settings."""
    finished = comparison.table[comparison.table["status"] == "FINISHED"]
    return all(finished[key].nunique() <= GRID_MAX for key in comparison.varied[:2])


def label_digits(values: np.ndarray, least: int = 3, most: int = 8) -> int:
    """Decimals enough that values that differ never read the same: on a colour scale
    spanning 0.974-0.976, 0.9745 and 0.9752 both read 0.975 with 3 digits."""
    finite = np.unique(values[np.isfinite(values)])
    for digits in range(least, most + 1):
        if len({f"{v:.{digits}f}" for v in finite}) == len(finite):
            return digits
    return most


def image_caption(comparison: Comparison) -> str | None:
    """How much one image moves an accuracy, for the splits whose size every run shares:
    differences smaller than that are no difference at all."""
    sizes = comparison.split_sizes
    said = [
        f"1/{sizes[split]} = {1 / sizes[split]:.3g} of {split} accuracy"
        f" ({100 / sizes[split]:.3g} points)"
        for split in ("valid", "test")
        if split in sizes
    ]
    return f"One image is {' and '.join(said)}." if said else None


def heatmap_figure(comparison: Comparison) -> Figure | None:
    """Valid and test accuracy over the two most varied settings (one, if only one varies);
    None unless the runs form a grid (a sweep's, not a search's). Cells and colour bars are
    labelled with enough digits that two colours never read the same (`label_digits`); the
    line under it says what one image is worth (`image_caption`)."""
    from matplotlib.ticker import ScalarFormatter

    finished = comparison.table[comparison.table["status"] == "FINISHED"]
    if finished.empty or not comparison.varied or not is_grid(comparison):
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
        digits = label_digits(values)
        for (i, j), value in np.ndenumerate(values):
            if not np.isnan(value):
                colour = "black" if value > middle else "white"  # readable on viridis
                shown = f"{value:.{digits}f}"
                ax.text(j, i, shown, ha="center", va="center", color=colour, fontsize=8)
        ax.set_yticks(range(len(grid.index)), [str(v) for v in grid.index])
        ax.set_xticks(range(len(grid.columns)), [str(v) for v in grid.columns])
        ax.set_ylabel(rows)
        ax.set_xlabel(cols or "")
        ax.set_title(
            "valid accuracy (kept epoch)" if metric.startswith("best") else "test accuracy"
        )
        bar = fig.colorbar(image, ax=ax)
        # matplotlib's tick labels are as long as the ticks need, but an offset (+0.97)
        # would leave a reader to add it up
        bar.ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))
    caption = image_caption(comparison)
    if caption:
        fig.supxlabel(caption, fontsize=9)
    return fig


def valid_test_figure(comparison: Comparison) -> Figure | None:
    """A search's runs, one point each: test against valid accuracy at the kept epoch.

    What a grid's heatmap shows cannot be drawn for runs that share no values; what matters
    in a search is whether the runs that look best on the valid set (the one they were chosen
    on) are also best on the test set. None for a grid (the heatmap shows it there)."""
    finished = comparison.table[comparison.table["status"] == "FINISHED"]
    if len(finished) < 2 or is_grid(comparison):
        return None
    valid = finished[Metric.BEST_VAL_ACCURACY].to_numpy(dtype=float)
    test = finished[Metric.TEST_ACCURACY].to_numpy(dtype=float)
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(valid, test, s=24, color="tab:blue", alpha=0.7, label="finished runs")
    ax.scatter(valid[:1], test[:1], s=90, facecolors="none", edgecolors="tab:red", linewidths=2)
    ax.annotate(
        f"best: {finished['run_name'].iloc[0]}",
        (valid[0], test[0]),
        textcoords="offset points",
        xytext=(-8, 8),
        ha="right",
        color="tab:red",
    )
    low = float(np.nanmin([valid.min(), test.min()]))
    high = float(np.nanmax([valid.max(), test.max()]))
    ax.plot([low, high], [low, high], color="grey", linestyle=":", label="test = valid")
    ax.set_xlabel("valid accuracy (kept epoch)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{len(finished)} finished runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def curves_figure(comparison: Comparison) -> Figure | None:
    """Every run's loss and accuracy per epoch: valid solid, train dashed.

    Up to `CURVES_NAMED` runs, the best first, get a colour and a legend entry (their varied
    settings, or their run name where those would not fit); any others are thin grey lines,
    so that a search of many runs stays readable. The loss is the penalty-free `data_loss`
    where every run has it (Keras' `loss` includes the L2 penalty, which would set L2 runs
    apart for no reason of fit)."""
    if not comparison.curves:
        return None
    penalty_free = all(h[Metric.DATA_LOSS].notna().any() for h in comparison.curves.values())
    metrics = (Metric.DATA_LOSS if penalty_free else Metric.LOSS, Metric.ACCURACY)
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    by_id = comparison.table.set_index("run_id")
    ranked = [r for r in comparison.table["run_id"] if r in comparison.curves]
    named = ranked[:CURVES_NAMED]
    colours = dict(zip(named, _colours(len(named)), strict=True))
    for run_id in reversed(ranked):  # the best drawn last, on top
        history = comparison.curves[run_id]
        colour, label, width = colours.get(run_id, "lightgrey"), None, 0.8
        if run_id in colours:
            label, width = _short_label(comparison, by_id.loc[run_id]), 1.5
        for ax, metric in zip(axes, metrics, strict=True):
            ax.plot(history.index, history[f"val_{metric}"], color=colour, lw=width, label=label)
            ax.plot(history.index, history[metric], color=colour, lw=width, ls="--", alpha=0.5)
    for ax, metric in zip(axes, metrics, strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric} (valid solid, train dashed)")
        ax.grid(alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()
    axes[1].legend(handles[::-1], labels[::-1], fontsize=7, loc="lower right")  # best first
    if len(ranked) > len(named):
        fig.suptitle(f"the best {len(named)} of {len(ranked)} runs in colour", fontsize=9)
    return fig


def _short_label(comparison: Comparison, row: pd.Series) -> str:
    label = comparison.label(row)
    return label if len(label) <= 60 else str(row["run_name"])


def _colours(n: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]


def comparison_figures(comparison: Comparison) -> dict[str, Figure]:
    """The figures of a comparison that has something to show, by name."""
    made = {
        "heatmap": heatmap_figure(comparison),
        "valid_vs_test": valid_test_figure(comparison),
        "learning_curves": curves_figure(comparison),
    }
    return {name: fig for name, fig in made.items() if fig is not None}
