"""Runs left RUNNING by a process that died without a word (SIGKILL, the OOM killer, a power
cut): found from the host and pid each run records at its start, and marked KILLED."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from pipeline.tracking.runs.lifecycle import end_run
from pipeline.tracking.runs.processes import Liveness, liveness


@dataclass(frozen=True)
class RunningRun:
    run_id: str
    experiment: str
    name: str
    liveness: Liveness


def running_runs(client: MlflowClient, experiment: str | None = None) -> list[RunningRun]:
    """Every RUNNING run (of `experiment`, or of every experiment) and whether its process
    is alive, gone or unknown (another host)."""
    experiments = client.search_experiments(view_type=ViewType.ALL)
    names = {e.experiment_id: e.name for e in experiments}
    ids = [e.experiment_id for e in experiments if experiment in (None, e.name)]
    if not ids:
        return []
    runs = client.search_runs(ids, "attributes.status = 'RUNNING'", ViewType.ALL)
    return [
        RunningRun(
            r.info.run_id,
            names[r.info.experiment_id],
            r.info.run_name or "",
            liveness(r.data.tags),
        )
        for r in runs
    ]


def mark_killed(client: MlflowClient, run: RunningRun) -> None:
    end_run(run.run_id, "KILLED", f"its process died ({run.liveness.reason})", client=client)
