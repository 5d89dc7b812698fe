"""Compare runs in one report: a sweep's children, or every run of an experiment.

    python -m pipeline.report --run-id <sweep parent run id> [--out reports/sweep.html]
    python -m pipeline.report --experiment notmnist [--tracking-uri ...] [--out report.md]

The report has a table of every run's varied settings and results, best first by valid
accuracy (ties: the penalty-free valid loss; never `val_loss`, which includes L2), a heatmap
of valid/test accuracy over the two most varied settings, all learning curves overlaid, and
the failures. A sweep logs the same onto its parent run when it ends.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.cli import _process

_process.configure()

import mlflow  # noqa: E402 - after the process settings
from mlflow.tracking import MlflowClient  # noqa: E402

from pipeline.reporting.comparison import compare, find_runs  # noqa: E402
from pipeline.reporting.figures import comparison_figures  # noqa: E402
from pipeline.reporting.render import data_uri, html, markdown  # noqa: E402
from pipeline.tracking.store import resolve_tracking_uri  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.report", description=(__doc__ or "").splitlines()[0]
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
    images = {name: data_uri(fig) for name, fig in comparison_figures(comparison).items()}
    out = args.out or Path("reports") / f"{args.run_id or args.experiment}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = html if out.suffix.lower() in (".html", ".htm") else markdown
    out.write_text(writer(comparison, images, title))
    print(f"{len(comparison.table)} runs compared; report written to {out}")
    return 0
