"""Where runs are recorded: store location and experiments."""

from __future__ import annotations

import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT
from mlflow.tracking import MlflowClient

from pipeline.config import project_home
from pipeline.tracking.store.connect import (
    TrackingError,
    connect,
    default_artifact_location,
    resolve_tracking_uri,
)


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
    with pytest.raises(TrackingError, match="'gone' is deleted.*experiments restore"):
        connect(store_uri, "gone")


def test_postgres_artifacts_go_under_the_project_home() -> None:
    """Not under whatever folder the first run started in."""
    expected = (project_home() / "mlruns" / "artifacts").as_uri()
    assert default_artifact_location("postgresql://u@db:5432/mlflow") == expected


@pytest.mark.parametrize(("timeout", "retries"), [(15.0, 2), (2.0, 0)])
def test_unreachable_server_fails_in_one_line_within_the_budget(
    timeout: float, retries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("TIMEOUT", "MAX_RETRIES", "BACKOFF_FACTOR"):  # connect sets them: restore
        monkeypatch.delenv(f"MLFLOW_HTTP_REQUEST_{name}", raising=False)
    started = time.monotonic()
    with pytest.raises(TrackingError, match=r"cannot reach http://127.0.0.1:9 \(") as caught:
        connect("http://127.0.0.1:9", "exp", timeout_s=timeout, retries=retries)
    assert time.monotonic() - started < timeout
    assert f"{retries + 1} tries" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unwritable_store_fails_at_once(tmp_path: Path) -> None:
    """(Tests run as root, whom permissions do not stop: a folder that cannot exist does.)"""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    started = time.monotonic()
    with pytest.raises(TrackingError, match="cannot write the tracking store .*a-file"):
        connect(f"sqlite:///{blocker / 'mlruns' / 'mlflow.db'}", "exp")
    assert time.monotonic() - started < 2


def test_half_migrated_store_is_refused_with_its_repair(store_uri: str) -> None:
    connect(store_uri, "exp")
    db = store_uri.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:  # what a migration killed halfway leaves behind
        conn.execute("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)")
    with pytest.raises(TrackingError, match="half-migrated") as caught:
        connect(store_uri, "exp")
    repair = str(caught.value).split("repair it with: ")[1]
    drop, upgrade = repair.split(" && ")
    assert drop == f"sqlite3 {db} 'DROP TABLE _alembic_tmp_experiments'"
    assert upgrade == f"mlflow db upgrade {store_uri}"
    with sqlite3.connect(db) as conn:  # the documented repair's first step, as sqlite3 runs it
        conn.execute(drop.split("'")[1])
    assert connect(store_uri, "exp").experiment_id


def test_store_with_an_old_schema_says_how_to_upgrade(store_uri: str, tmp_path: Path) -> None:
    old = tmp_path / "old" / "mlflow.db"  # a store this process has not opened yet
    old.parent.mkdir()
    shutil.copyfile(store_uri.removeprefix("sqlite:///"), old)
    with sqlite3.connect(old) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '451aebb31d03'")  # an old one
    uri = f"sqlite:///{old}"
    with pytest.raises(TrackingError, match=f"back it up, then run: mlflow db upgrade {uri}$"):
        connect(uri, "exp")


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
