"""A run's life cycle: FINISHED, FAILED or KILLED, never RUNNING; signals; git tags."""

from __future__ import annotations

import signal
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking.runs.lifecycle import git_tags, raise_interrupt, tracked_run
from pipeline.tracking.store.connect import connect


def _status(store_uri: str, run_id: str) -> str:
    return MlflowClient(store_uri).get_run(run_id).info.status


def test_finished_run(store_uri: str) -> None:
    store = connect(store_uri, "exp")
    with tracked_run(store, "ok") as run:
        mlflow.log_metric("x", 1.0)
    assert _status(store_uri, run.info.run_id) == "FINISHED"
    assert mlflow.active_run() is None


def test_exception_marks_run_failed_with_traceback(store_uri: str) -> None:
    store = connect(store_uri, "exp")
    with pytest.raises(RuntimeError, match="boom"), tracked_run(store) as run:
        raise RuntimeError("boom")
    client = MlflowClient(store_uri)
    assert _status(store_uri, run.info.run_id) == "FAILED"
    assert client.get_run(run.info.run_id).data.tags["error"] == "RuntimeError: boom"
    text = Path(client.download_artifacts(run.info.run_id, "error.txt")).read_text()
    assert "RuntimeError: boom" in text


def test_interrupt_marks_run_killed(store_uri: str) -> None:
    store = connect(store_uri, "exp")
    with pytest.raises(KeyboardInterrupt), tracked_run(store) as run:
        raise KeyboardInterrupt
    assert _status(store_uri, run.info.run_id) == "KILLED"
    assert mlflow.active_run() is None


def test_git_tags_name_the_commit(tmp_path: Path) -> None:
    tags = git_tags()
    if tags:  # a checkout with git available
        assert len(tags["mlflow.source.git.commit"]) == 40
        assert tags["git.dirty"] in {"true", "false"}
    assert git_tags(source=tmp_path) == {}  # not a repository: no tags, no error


def test_signals_are_restored_after_a_run(store_uri: str) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with tracked_run(connect(store_uri, "exp")):
        assert signal.getsignal(signal.SIGTERM) is raise_interrupt
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_audit_runs_record_their_process_for_stale_runs(store_uri: str) -> None:
    """A retraining attempt SIGKILLed mid-way leaves its audit run RUNNING: its host, pid and
    start time let `maintenance stale-runs` find it (before: it recorded none)."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.runs.audit import audit_run
    from pipeline.tracking.runs.processes import liveness
    from pipeline.tracking.store.connect import connect

    store = connect(store_uri, "retraining")
    with audit_run(store, "retrain", {}) as audit:
        tags = MlflowClient(store_uri).get_run(audit.run_id).data.tags
        assert {"host", "pid", "pid.started"} <= set(tags)
        assert liveness(tags).state == "alive"


def test_a_registry_tag_and_a_model_id_are_read_as_data(store_uri: str) -> None:
    """`champion.history`, which anyone with EDIT on the model may rewrite, yields version
    numbers only; a logged model's id goes into a URI only as MLflow makes it."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.models import registry

    client = MlflowClient(store_uri, registry_uri=store_uri)
    client.create_registered_model("notmnist")
    client.set_registered_model_tag("notmnist", "champion.history", "1,../../x,2, 3,models:/m")
    assert registry.champion_history(client, "notmnist") == ["1", "2"]
    with pytest.raises(LookupError, match="is not one MLflow makes"):
        registry._model_id("m-0123/../../x")
    assert registry._model_id("m-" + "0" * 32) == "m-" + "0" * 32
