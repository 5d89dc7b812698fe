"""The retraining audit trail: one MLflow run per attempt, whatever its end.

An audit run is made with the client (`lifecycle.open_run`), not as the fluent "active run",
beside the training run it causes. Like every run, it ends FINISHED, FAILED (with the
traceback) or KILLED, never RUNNING, and its decision says which.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

from mlflow.entities import Metric as MlflowMetric
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from pipeline.names import Tag
from pipeline.tracking.runs.lifecycle import open_run
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
        rows = [MlflowMetric(k, float(v), now, 0) for k, v in metrics.items()]
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
    error (decision `failed`) when it raises, KILLED (decision `killed`) on Ctrl-C or
    SIGTERM."""
    with open_run(store, run_name, tags, end_tags=_decision) as run:
        yield Audit(run.client, run.run_id)


def _decision(status: str, message: str | None) -> dict[str, str]:
    """An attempt that did not finish: its decision and reason say so."""
    decision = "killed" if status == "KILLED" else "failed"
    return {Tag.DECISION: decision, Tag.REASON: (message or status)[:5000]}
