"""Where runs are recorded: store location and experiments."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import PROJECT_ROOT
from mlflow.tracking import MlflowClient

from pipeline.tracking.store import connect, default_artifact_location, resolve_tracking_uri


def test_default_store_is_under_project_mlruns() -> None:
    uri = resolve_tracking_uri(None)
    assert uri == f"sqlite:///{PROJECT_ROOT / 'mlruns' / 'mlflow.db'}"
    assert default_artifact_location(uri) == (PROJECT_ROOT / "mlruns" / "artifacts").as_uri()


def test_relative_sqlite_path_is_taken_from_project_root(tmp_path: Path) -> None:
    assert resolve_tracking_uri("sqlite:///stores/x.db", root=tmp_path) == (
        f"sqlite:///{tmp_path / 'stores' / 'x.db'}"
    )
    absolute = f"sqlite:///{tmp_path / 'a.db'}"
    assert resolve_tracking_uri(absolute) == absolute
    assert resolve_tracking_uri("http://mlflow:5000") == "http://mlflow:5000"
    assert default_artifact_location("http://mlflow:5000") is None


def test_uri_without_scheme_is_rejected() -> None:
    with pytest.raises(ValueError, match="has no scheme"):
        resolve_tracking_uri("mlruns")


def test_connect_creates_experiment_once(store_uri: str, tmp_path: Path) -> None:
    first = connect(store_uri, "exp")
    again = connect(store_uri, "exp")
    assert first.experiment_id == again.experiment_id
    experiment = MlflowClient(store_uri).get_experiment(first.experiment_id)
    assert experiment.artifact_location == (tmp_path / "mlruns" / "artifacts").as_uri()


def test_deleted_experiment_is_a_clear_error(store_uri: str) -> None:
    store = connect(store_uri, "gone")
    MlflowClient(store_uri).delete_experiment(store.experiment_id)
    with pytest.raises(ValueError, match="'gone' is deleted"):
        connect(store_uri, "gone")
