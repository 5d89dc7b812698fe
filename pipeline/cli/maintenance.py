"""`notmnist maintenance stale-runs [kill=true] [experiment=NAME] [tracking_uri=URI]`: runs
left RUNNING by processes that died.

Lists every RUNNING run with its process: `gone` (it was started on this host and its
process no longer exists, or the pid is now another process), `alive`, or `unknown` (started
on another host: not touched). With kill=true, the gone ones are marked KILLED; a killed run's
training can still be continued with `notmnist train.resume=<run id>`.
"""

from __future__ import annotations

from pipeline.config.schema import MaintenanceConfig, from_args


def run(args: list[str]) -> int:
    settings = from_args(MaintenanceConfig, args, positional=("action",))
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.runs.stale import mark_killed, running_runs
    from pipeline.tracking.store.connect import reach

    uri = reach(settings.tracking_uri)
    client = MlflowClient(uri)
    runs = running_runs(client, settings.experiment)
    gone = [r for r in runs if r.liveness.state == "gone"]
    for found in runs:
        action = " -> marked KILLED" if settings.kill and found in gone else ""
        print(
            f"{found.run_id}  {found.liveness.state:<7}  {found.experiment}/{found.name}: "
            f"{found.liveness.reason}{action}"
        )
        if action:
            mark_killed(client, found)
    if gone and not settings.kill:
        print(f"{len(gone)} stale run(s); mark them KILLED with kill=true")
    elif not runs:
        print(f"no RUNNING runs in {uri}")
    return 0
