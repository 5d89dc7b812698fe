"""The retraining audit trail: one MLflow run per attempt, whatever its end.

An audit run is made with the client, not as the fluent "active run", so that the training
run it causes can be an ordinary fluent run (`pipeline.jobs.training.run`) while it is open.
Like `tracked_run`, it ends FINISHED, FAILED (with the traceback) or KILLED, never RUNNING.
"""

from __future__ import annotations

import contextlib
import io
import json
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

from mlflow.entities import Metric as MlflowMetric
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from pipeline.names import Artifact, Tag
from pipeline.precision import metric_value
from pipeline.tracking.runs.lifecycle import git_tags
from pipeline.tracking.runs.processes import process_tags
from pipeline.tracking.store.connect import Store


class Audit:
    """What an attempt records on its run: tags, metrics, a table, a JSON document."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def tags(self, tags: Mapping[str, object]) -> None:
        shown = [RunTag(k, str(v)[:5000]) for k, v in tags.items() if v is not None]
        self.client.log_batch(self.run_id, tags=shown)

    def metrics(self, metrics: Mapping[str, float]) -> None:
        import time

        now = int(time.time() * 1000)
        rows = [MlflowMetric(k, metric_value(v), now, 0) for k, v in metrics.items()]
        self.client.log_batch(self.run_id, metrics=rows)

    def text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def json(self, data: Any, artifact_file: str) -> None:
        self.text(json.dumps(data, indent=2, default=str), artifact_file)

    def table(self, frame: Any, artifact_file: str) -> None:
        buffer = io.StringIO()
        frame.to_csv(buffer)
        self.text(buffer.getvalue(), artifact_file)


@contextlib.contextmanager
def audit_run(store: Store, run_name: str, tags: Mapping[str, str]) -> Iterator[Audit]:
    """One audit run in `store`'s experiment: FINISHED when the block ends, FAILED with the
    error (decision `failed`) when it raises, KILLED on Ctrl-C or SIGTERM."""
    client = MlflowClient(store.uri)
    # host, pid and start time, so that `stale-runs` finds it if this process is SIGKILLed
    own = {**git_tags(), **process_tags(), **tags}
    run = client.create_run(store.experiment_id, run_name=run_name, tags=own)
    audit = Audit(client, run.info.run_id)
    try:
        yield audit
    except KeyboardInterrupt:
        _end(audit, "KILLED", "interrupted (Ctrl-C or SIGTERM)")
        raise
    except BaseException as exc:
        _end(audit, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    client.set_terminated(audit.run_id, "FINISHED")


def _end(audit: Audit, status: str, message: str) -> None:
    try:
        decision = "killed" if status == "KILLED" else "failed"
        audit.tags({Tag.DECISION: decision, Tag.REASON: message, Tag.ERROR: message})
        audit.text(traceback.format_exc(), Artifact.ERROR)
    finally:
        audit.client.set_terminated(audit.run_id, status)
