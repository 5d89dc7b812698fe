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


def test_experiments_open_as_model_training_with_the_comparison_view(store_uri: str) -> None:
    import json

    client = MlflowClient(store_uri)
    store = connect(store_uri, "new")
    tags = client.get_experiment(store.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags["mlflow.sharedViewState.compare"])
    assert view["selectedColumns"][0] == "metrics.`best_val_accuracy`"
    [parallel] = [c for c in view["compareRunCharts"] if c["type"] == "PARALLEL"]
    assert parallel["selectedParams"] == ["model.l2_beta", "model.dropout_rate"]
    assert "runs?viewStateShareKey=compare&workflowType=machine_learning" in store.ui_hint()
    # an experiment made elsewhere (by hand, an older version) is tagged when next used,
    # but a kind chosen in the UI stays
    old = client.create_experiment("old")
    client.set_experiment_tag(old, "mlflow.sharedViewState.compare", "{}")
    connect(store_uri, "old")
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(old).tags["mlflow.sharedViewState.compare"] != "{}"
    chosen = client.create_experiment("chosen", tags={"mlflow.experimentKind": "genai_development"})
    connect(store_uri, "chosen")
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"
