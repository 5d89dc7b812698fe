"""`notmnist reproduce <run id> [data.KEY=VALUE ...]`: rerun a past run from its logged config on
the same data, and report metric by metric whether the result is identical.

The logged config is a record, not an instruction: `data.*` settings given here say where the
data is now or grant an opt-in the record asks for (a pickle, a download).
"""

from __future__ import annotations

import logging

from pipeline import process
from pipeline.config.schema import ReproduceConfig, from_args
from pipeline.errors import ConfigError, NotIdenticalError, TrackingError


def run(args: list[str]) -> int:
    settings = from_args(ReproduceConfig, args, positional=("run_id",))
    from pipeline.tracking.store.connect import reach

    uri = reach(settings.tracking_uri)
    given = {f"data.{k}": v for k, v in settings.data.model_dump(exclude_none=True).items()}
    process.import_tensorflow_without_jax()
    from mlflow.exceptions import MlflowException

    from pipeline.config.compose import default_tracking
    from pipeline.jobs.reproduction import reproduce

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tracking = default_tracking().model_copy(update={"uri": uri})
    try:
        result = reproduce(settings.run_id, tracking, given, started=process.STARTED)
    except MlflowException as exc:
        message = str(exc.message).strip().splitlines()[0]
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ConfigError(f"run_id={settings.run_id}: no such run in {uri}") from None
        raise TrackingError(f"run {settings.run_id} in {uri}: {message}") from None
    print(result.table())
    if not result.identical:
        differ = sum(not row.identical for row in result.rows)
        raise NotIdenticalError(
            f"{differ} of {len(result.rows)} metrics differ (run {result.run_id})"
        )
    print(f"Identical: run {result.run_id} reproduces run {settings.run_id} metric for metric.")
    return 0
