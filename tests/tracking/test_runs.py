"""A run's life cycle: FINISHED, FAILED or KILLED, never RUNNING; signals; git tags."""

from __future__ import annotations

import signal
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking.runs import git_tags, raise_interrupt, tracked_run
from pipeline.tracking.store import connect


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
