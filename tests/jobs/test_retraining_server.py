"""Retraining against a team's set-up: an MLflow server on PostgreSQL (started as
docker-compose.yml starts it, the local PostgreSQL standing in for the `db` service), with
the retrain lock as a PostgreSQL advisory lock (`retrain.lock`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PG, free_port, mlflow_server, postgres_up
from mlflow.tracking import MlflowClient
from retrain_helpers import SMALL, Sources, retrain_settings

from pipeline.names import Tag

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(server URI, its database's URI), both dropped at the end."""
    if not postgres_up():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import psycopg

    db = f"retrain_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    artifacts = tmp_path_factory.mktemp("artifacts")
    uri = f"http://127.0.0.1:{port}"
    command = [
        "server",
        f"--backend-store-uri={PG}/{db}",
        f"--artifacts-destination={artifacts}",
        "--serve-artifacts",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--allowed-hosts=127.0.0.1:{port}",
        "--workers=1",
    ]
    try:
        with mlflow_server(command, uri, log):
            yield uri, f"{PG}/{db}"
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_first_champion_skip_and_kept_challenger_on_a_server(
    server: tuple[str, str], tmp_path: Path
) -> None:
    from pipeline.jobs.retraining import retrain
    from pipeline.tracking.store.locks import store_lock

    uri, database = server
    src = Sources(tmp_path / "sources")

    def attempt(data: str, *more: str):
        cfg = retrain_settings(
            *SMALL,
            f"tracking.uri={uri}",
            f"retrain.lock={database}",
            f"data.path={data}",
            f"retrain.holdout.path={src.holdout}",
            *more,
        )
        return retrain(cfg)

    first, same, kept = attempt(src.v1), attempt(src.v1), attempt(src.v2, "retrain.min_delta=1")
    assert (first.decision, first.champion_after) == ("promoted", "1")
    assert (same.decision, same.version) == ("skipped", None)
    assert (kept.decision, kept.version, kept.champion_after) == ("kept", "2", "1")
    with store_lock(uri, "retrain-notmnist", lock_uri=database):  # another machine holds it
        locked = attempt(src.v2, "retrain.force=true")
    assert locked.decision == "locked_out"

    client = MlflowClient(uri, registry_uri=uri)
    aliases = client.get_registered_model("notmnist").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "1", "challenger": "2"}
    assert client.get_model_version("notmnist", "2").tags[Tag.DECISION] == "kept"
    experiment = client.get_experiment_by_name("retraining")
    runs = client.search_runs([experiment.experiment_id], order_by=["attribute.start_time ASC"])
    decisions = [r.data.tags[Tag.DECISION] for r in runs]
    assert decisions == ["promoted", "skipped", "kept", "locked_out"]


def test_predict_and_reproduce_through_the_server(server: tuple[str, str], tmp_path: Path) -> None:
    """Prediction and reproduction work the same against a team's server."""
    import os

    from conftest import TINY, assert_quiet, cli
    from models_fixture import letters, register_champion, write_sources

    uri, _ = server
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    trained = cli(*TINY, "tracking.experiment=served", f"hydra.run.dir={tmp_path}", env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("served")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id])
    register_champion(f"runs:/{run.info.run_id}/model", env)
    tar = write_sources(tmp_path / "in", letters(20)[0])["tar"]
    predicted = cli(
        "predict",
        "model=models:/notmnist@champion",
        f"input={tar}",
        f"output={tmp_path / 'p.csv'}",
        env=env,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "Read 20 images, skipped 3" in predicted.stdout
    reproduced = cli("reproduce", run.info.run_id, env=env)
    assert reproduced.returncode == 0, reproduced.stdout[-3000:] + reproduced.stderr[-3000:]
    assert f"reproduces run {run.info.run_id} metric for metric" in reproduced.stdout
    for result in (trained, predicted, reproduced):  # a quiet console, its output a file
        assert_quiet(result)
