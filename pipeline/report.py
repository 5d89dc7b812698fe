"""Compare runs: a sweep's children, or all runs of an experiment, in one report.

    python -m pipeline.report --run-id <sweep parent run id> [--out reports/sweep.html]
    python -m pipeline.report --experiment notmnist [--tracking-uri ...] [--out report.md]

The sweep callback logs the same comparison onto the parent run when a sweep ends: a table
of every run's varied settings and results sorted by the monitored metric, a heatmap of
valid/test accuracy over the two most varied settings, all learning curves overlaid, the
failures, and the best run's id and settings as tags.
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

RESULTS = (
    "best_val_accuracy",
    "best_val_loss",
    "test_accuracy",
    "test_loss",
    "train_valid_gap",
    "best_epoch",
    "epochs_run",
    "param_count",
    "seconds.train",
)
# monitored metric -> (column of the kept epoch's value, ascending order is best first)
_ORDER = {
    "val_loss": ("best_val_loss", True),
    "val_accuracy": ("best_val_accuracy", False),
    "loss": ("best_val_loss", True),
    "accuracy": ("best_val_accuracy", False),
}
_FAILED = ("FAILED", "KILLED")


@dataclass
class Comparison:
    """Runs side by side: `table` has one row per run, best first."""

    table: pd.DataFrame
    varied: list[str]
    sort_by: str
    failures: pd.DataFrame
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def best(self) -> pd.Series | None:
        finished = self.table[self.table["status"] == "FINISHED"]
        return None if finished.empty else finished.iloc[0]

    def label(self, row: pd.Series) -> str:
        return ", ".join(f"{p}={row[p]}" for p in self.varied) or str(row["run_name"])


def find_runs(experiment_ids: Sequence[str], parent_run_id: str | None) -> pd.DataFrame:
    """Children of `parent_run_id`, or every run of the experiments that is not a sweep parent."""
    runs = mlflow.search_runs(
        experiment_ids=list(experiment_ids),
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'" if parent_run_id else "",
        max_results=50_000,
    )
    if not parent_run_id and "tags.sweep" in runs:
        runs = runs[runs["tags.sweep"] != "true"]
    return runs.reset_index(drop=True)


def compare(runs: pd.DataFrame, client: MlflowClient | None = None) -> Comparison:
    """The comparison of runs as `mlflow.search_runs` returns them (with learning curves when
    a client is given)."""
    # settings that differ between runs; where the runs are (tracking.*) is not a setting
    params = sorted(
        c for c in runs.columns if c.startswith("params.") and not c.startswith("params.tracking.")
    )
    varied = [c for c in params if runs[c].nunique() > 1]
    varied.sort(key=lambda c: -runs[c].nunique())  # most distinct values first
    table = pd.DataFrame(
        {
            "run_id": runs["run_id"],
            "run_name": runs.get("tags.mlflow.runName", runs["run_id"]),
            "status": runs["status"],
            **{c.removeprefix("params."): runs[c] for c in varied},
            **{m: runs.get(f"metrics.{m}", np.nan) for m in RESULTS},
        }
    )
    for count in ("best_epoch", "epochs_run", "param_count"):
        table[count] = table[count].astype("Int64")
    monitors = runs.get("params.train.early_stopping.monitor", pd.Series(dtype=object)).dropna()
    sort_by, ascending = _ORDER.get(
        monitors.mode()[0] if len(monitors) else "", _ORDER["val_accuracy"]
    )
    table = table.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")
    failed = table["status"].isin(_FAILED)
    failures = table.loc[failed, ["run_id", "run_name", "status"]].copy()
    failures["error"] = [
        runs.set_index("run_id").get("tags.error", pd.Series(dtype=object)).get(r, "")
        for r in failures["run_id"]
    ]
    comparison = Comparison(
        table.reset_index(drop=True),
        [c.removeprefix("params.") for c in varied],
        sort_by,
        failures.reset_index(drop=True),
    )
    if client is not None:
        comparison.curves = {
            run_id: _history(client, run_id)
            for run_id in comparison.table.loc[~failed.to_numpy(), "run_id"]
        }
    return comparison


def _history(client: MlflowClient, run_id: str) -> pd.DataFrame:
    columns = {}
    for metric in ("loss", "accuracy", "val_loss", "val_accuracy"):
        points = client.get_metric_history(run_id, metric)
        columns[metric] = pd.Series({p.step: p.value for p in points}, dtype=float)
    return pd.DataFrame(columns).sort_index().rename_axis("epoch")


def heatmap_figure(comparison: Comparison) -> Figure | None:
    """Valid and test accuracy over the two most varied settings (one, if only one varies)."""
    finished = comparison.table[comparison.table["status"] == "FINISHED"]
    if finished.empty or not comparison.varied:
        return None
    rows = comparison.varied[0]
    cols = comparison.varied[1] if len(comparison.varied) > 1 else None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    for ax, metric in zip(fig.subplots(1, 2), ("best_val_accuracy", "test_accuracy"), strict=True):
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
    """Every run's loss and accuracy per epoch: valid solid, train dashed, one colour per run."""
    if not comparison.curves:
        return None
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    axes = fig.subplots(1, 2)
    colours = iter(_colours(len(comparison.curves)))
    by_id = comparison.table.set_index("run_id")
    for run_id, history in comparison.curves.items():
        colour = next(colours)
        label = comparison.label(by_id.loc[run_id])
        for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
            ax.plot(history.index, history[f"val_{metric}"], color=colour, label=label)
            ax.plot(history.index, history[metric], color=colour, linestyle="--", alpha=0.5)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
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


def figures(comparison: Comparison) -> dict[str, Figure]:
    made = {"heatmap": heatmap_figure(comparison), "learning_curves": curves_figure(comparison)}
    return {name: fig for name, fig in made.items() if fig is not None}


def markdown(comparison: Comparison, images: dict[str, str], title: str) -> str:
    """The report as Markdown; `images` maps figure names to their links (paths or data URIs)."""
    best = comparison.best
    lines = [f"# {title}", ""]
    total, failed = len(comparison.table), len(comparison.failures)
    lines.append(
        f"{total} runs, {total - failed} finished, {failed} failed; sorted by "
        f"`{comparison.sort_by}` (the monitored metric at the kept epoch)."
    )
    if best is not None:
        lines += [
            "",
            f"**Best**: run `{best['run_id']}` ({comparison.label(best)}): "
            f"valid accuracy {best['best_val_accuracy']:.4f}, "
            f"test accuracy {best['test_accuracy']:.4f}.",
        ]
    lines += ["", "## Runs", "", comparison.table.to_markdown(index=False, floatfmt=".4g")]
    if failed:
        lines += ["", "## Failed runs", "", comparison.failures.to_markdown(index=False)]
    for name, link in images.items():
        lines += ["", f"## {name.replace('_', ' ').capitalize()}", "", f"![{name}]({link})"]
    return "\n".join(lines) + "\n"


def html(comparison: Comparison, images: dict[str, str], title: str) -> str:
    """The same report as one self-contained HTML page."""
    best = comparison.best
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}</style>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{len(comparison.table)} runs, {len(comparison.failures)} failed; sorted by "
        f"<code>{comparison.sort_by}</code>.</p>",
    ]
    if best is not None:
        label = escape(comparison.label(best))
        parts.append(
            f"<p><b>Best</b>: run <code>{best['run_id']}</code> ({label}): "
            f"valid accuracy {best['best_val_accuracy']:.4f}, test accuracy "
            f"{best['test_accuracy']:.4f}.</p>"
        )
    parts += ["<h2>Runs</h2>", comparison.table.to_html(index=False, float_format="%.4g")]
    if len(comparison.failures):
        parts += ["<h2>Failed runs</h2>", comparison.failures.to_html(index=False)]
    for name, link in images.items():
        parts += [f"<h2>{name.replace('_', ' ').capitalize()}</h2>", f"<img src='{link}'>"]
    return "\n".join(parts)


def data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def log_to_parent(
    client: MlflowClient, parent_run_id: str, comparison: Comparison, title: str
) -> None:
    """Attach the comparison to the sweep's parent run: artifacts, best-run tags and metrics."""
    client.log_text(
        parent_run_id, comparison.table.to_csv(index=False), "comparison/comparison.csv"
    )
    images = {}
    for name, fig in figures(comparison).items():
        client.log_figure(parent_run_id, fig, f"comparison/{name}.png")
        images[name] = f"{name}.png"
    client.log_text(parent_run_id, markdown(comparison, images, title), "comparison/report.md")
    tags = {"sweep.runs": str(len(comparison.table)), "sweep.failed": str(len(comparison.failures))}
    metrics = {}
    best = comparison.best
    if best is not None:
        tags |= {"best.run_id": best["run_id"], "best.run_name": str(best["run_name"])}
        tags |= {f"best.{setting}": str(best[setting]) for setting in comparison.varied}
        metrics = {
            m: float(best[m])
            for m in ("best_val_accuracy", "best_val_loss", "test_accuracy", "test_loss")
            if pd.notna(best[m])
        }
    now = int(time.time() * 1000)
    client.log_batch(
        parent_run_id,
        metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.report", description=__doc__.splitlines()[0]
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-id", help="a sweep's parent run: compare its children")
    which.add_argument("--experiment", help="compare every run of this experiment")
    parser.add_argument(
        "--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the project's mlruns/"
    )
    parser.add_argument(
        "--out", type=Path, help="report file, .md or .html (default: reports/<id>.html)"
    )
    args = parser.parse_args(argv)

    import os

    from pipeline.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    if args.run_id:
        try:
            parent = client.get_run(args.run_id)
        except mlflow.exceptions.MlflowException:
            print(f"report error: no run {args.run_id} in {uri}", file=sys.stderr)
            return 2
        experiment_ids, title = [parent.info.experiment_id], f"Sweep {parent.info.run_name}"
    else:
        experiment = client.get_experiment_by_name(args.experiment)
        if experiment is None:
            print(f"report error: no experiment {args.experiment!r} in {uri}", file=sys.stderr)
            return 2
        experiment_ids, title = [experiment.experiment_id], f"Experiment {args.experiment}"
    runs = find_runs(experiment_ids, args.run_id)
    if runs.empty:
        print(
            f"report error: no runs to compare for {args.run_id or args.experiment}",
            file=sys.stderr,
        )
        return 1
    comparison = compare(runs, client)
    images = {name: data_uri(fig) for name, fig in figures(comparison).items()}
    out = args.out or Path("reports") / f"{args.run_id or args.experiment}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = html if out.suffix.lower() in (".html", ".htm") else markdown
    out.write_text(writer(comparison, images, title))
    print(f"{len(comparison.table)} runs compared; report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
