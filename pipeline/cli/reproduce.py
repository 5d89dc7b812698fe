"""`notmnist reproduce <run id> [at_commit=true] [data.KEY=VALUE ...]`: rerun a past run from its
logged config on the same data, and report metric by metric whether the result is identical.

It says first what differs between the run and now (its code and environment as recorded,
`pipeline.jobs.then_and_now`), and, where the result differs, the likely causes it found.
`at_commit=true` reruns the run's own code rather than today's (`pipeline.jobs.at_commit`).

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
    if not settings.at_commit:  # the rerun trains here; at the commit, in its own process
        process.import_tensorflow_without_jax()
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from pipeline.config.compose import default_tracking
    from pipeline.jobs import then_and_now
    from pipeline.jobs.reproduction import reproduce, reproduce_at_commit

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tracking = default_tracking().model_copy(update={"uri": uri})
    try:
        original = MlflowClient(uri).get_run(settings.run_id)
        then = then_and_now.then(MlflowClient(uri), original)
        if settings.at_commit:
            from pipeline.jobs.at_commit import check_commit, check_patch, repository

            check_commit(then.code, settings.run_id, repository())  # before any work
            check_patch(then.code, settings.run_id, settings.patch)
            rerun = then_and_now.at_commit(then)
        else:
            rerun = then_and_now.now()
        found = then_and_now.differences(then, rerun)
        print("\n".join(then_and_now.report(found)), flush=True)
        if settings.at_commit:
            result = reproduce_at_commit(
                settings.run_id, tracking, rerun.code, given, patch=settings.patch
            )
        else:
            result = reproduce(settings.run_id, tracking, given, started=process.STARTED)
    except MlflowException as exc:
        message = str(exc.message).strip().splitlines()[0]
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise ConfigError(f"run_id={settings.run_id}: no such run in {uri}") from None
        raise TrackingError(f"run {settings.run_id} in {uri}: {message}") from None
    print(result.table())
    if not result.identical:
        differ = sum(not row.identical for row in result.rows)
        causes = [*result.causes, *then_and_now.causes(found)]
        if causes:
            print("Likely causes, likeliest first:", *(f"  {c}" for c in causes), sep="\n")
        else:
            print(
                "No difference found in the data, config, code, packages, Python, Keras "
                "backend, platform or CPU: the rerun is not deterministic here."
            )
        cause = causes[0] if causes else "none found"
        raise NotIdenticalError(
            f"{differ} of {len(result.rows)} metrics differ (run {result.run_id}); "
            f"likely cause: {cause}"
        )
    print(f"Identical: run {result.run_id} reproduces run {settings.run_id} metric for metric.")
    return 0
