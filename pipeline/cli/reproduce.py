"""`python -m pipeline.reproduce <run id>` (or `notmnist-reproduce`): rerun a past run from its
logged config on the same data, and report metric by metric whether the result is identical.

Exit codes: 0 identical, 3 some metric differs, 1 the run or its data cannot be found or the
data changed (one line: `data error:` / `run error:`), 2 the logged config no longer validates.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from pipeline.cli import _process

_process.configure()

from mlflow.exceptions import MlflowException  # noqa: E402 - after the process settings

from pipeline.config import ConfigError, TrackingConfig  # noqa: E402
from pipeline.config.logged import LOCATION, check_given  # noqa: E402
from pipeline.stages.data.dataset import DataError  # noqa: E402
from pipeline.tracking.store import resolve_tracking_uri  # noqa: E402

DIFFERS = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.reproduce", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("run_id", help="the MLflow run to reproduce")
    parser.add_argument(
        "given",
        nargs="*",
        metavar="data.KEY=VALUE",
        help="where the data is now, or an opt-in the run's config asks for: "
        + ", ".join(sorted(LOCATION)),
    )
    parser.add_argument(
        "--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the project's mlruns/"
    )
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    try:
        given = _given(args.given)
        check_given(given, "reproduce")
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    _process.import_tensorflow_without_jax()
    from pipeline.jobs.reproduction import reproduce

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tracking = TrackingConfig(
        uri=uri, experiment="notmnist", run_name=None, artifact_location=None, log_model=True
    )
    try:
        result = reproduce(args.run_id, tracking, given, started=_process.STARTED)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"data error: {exc}", file=sys.stderr)
        return 1
    except MlflowException as exc:
        message = str(exc.message).strip().splitlines()[0]
        print(f"run error: {args.run_id} in {uri}: {message}", file=sys.stderr)
        return 1
    print(result.table())
    if result.identical:
        print(f"Identical: run {result.run_id} reproduces run {args.run_id} metric for metric.")
        return 0
    differ = sum(not row.identical for row in result.rows)
    print(f"Not identical: {differ} of {len(result.rows)} metrics differ (run {result.run_id}).")
    return DIFFERS


def _given(args: Sequence[str]) -> dict[str, Any]:
    """`key=value` arguments, values read as YAML scalars (true, null, numbers), as Hydra's."""
    import yaml

    given: dict[str, Any] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"{arg!r} is not key=value")
        given[key] = yaml.safe_load(value) if value else None
    return given
