"""Store maintenance: runs left RUNNING by processes that died.

    python -m pipeline.maintenance stale-runs [--kill] [--experiment NAME] [--tracking-uri URI]

Lists every RUNNING run with its process: `gone` (it was started on this host and its
process no longer exists, or the pid is now another process), `alive`, or `unknown` (started
on another host: not touched). With --kill, the gone ones are marked KILLED; a killed run's
training can still be continued with `python -m pipeline train.resume=<run id>`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pipeline.cli import _process

_process.configure()

from mlflow.tracking import MlflowClient  # noqa: E402 - after the process settings

from pipeline.tracking.stale import mark_killed, running_runs  # noqa: E402
from pipeline.tracking.store import resolve_tracking_uri  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.maintenance", description=(__doc__ or "").splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    stale = commands.add_parser("stale-runs", help="list RUNNING runs whose process is gone")
    stale.add_argument("--kill", action="store_true", help="mark the gone ones KILLED")
    stale.add_argument("--experiment", help="only this experiment (default: all)")
    stale.add_argument(
        "--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the project's mlruns/"
    )
    args = parser.parse_args(argv)

    try:
        uri = resolve_tracking_uri(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    except ValueError as exc:
        print(f"tracking error: {exc}", file=sys.stderr)
        return 2
    client = MlflowClient(uri)
    runs = running_runs(client, args.experiment)
    gone = [r for r in runs if r.liveness.state == "gone"]
    for run in runs:
        action = " -> marked KILLED" if args.kill and run in gone else ""
        print(
            f"{run.run_id}  {run.liveness.state:<7}  {run.experiment}/{run.name}: "
            f"{run.liveness.reason}{action}"
        )
        if action:
            mark_killed(client, run)
    if gone and not args.kill:
        print(f"{len(gone)} stale run(s); mark them KILLED with --kill")
    elif not runs:
        print(f"no RUNNING runs in {uri}")
    return 0
