"""The team set-up: the pipeline logging to an MLflow server on PostgreSQL, started with the
same flags as docker-compose.yml (the local PostgreSQL stands in for the `db` service)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import yaml
from conftest import PROJECT_ROOT, TINY, cli
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

PG = "postgresql://postgres@127.0.0.1:5432"


def _postgres_up() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    for attempt in range(2):
        try:
            psycopg.connect(f"{PG}/postgres", connect_timeout=3).close()
            return True
        except psycopg.OperationalError:
            if attempt == 0:  # down: start it the way this machine's services are started
                subprocess.run(
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
                    shell=True,
                    capture_output=True,
                    timeout=60,
                )
                time.sleep(2)
    return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not _postgres_up():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import psycopg

    db = f"mlflow_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    flags = {
        "--backend-store-uri": f"{PG}/{db}",
        "--artifacts-destination": str(tmp_path_factory.mktemp("artifacts")),
        "--host": "127.0.0.1",
        "--port": str(port),
    }
    command = [
        arg.split("=", 1)[0] + "=" + flags[arg.split("=", 1)[0]]
        if arg.split("=", 1)[0] in flags
        else arg
        for arg in compose["services"]["mlflow"]["command"][2:]
    ]
    command = [a.replace("localhost:5000", f"127.0.0.1:{port}") for a in command]
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", *command, "--workers=1"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"MLflow server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def test_pipeline_logs_to_server(server: str, tmp_path: Path) -> None:
    result = cli(
        *TINY, f"tracking.uri={server}", "tracking.experiment=team", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(server)
    [found] = client.search_runs(client.get_experiment_by_name("team").experiment_id)
    assert found.info.status == "FINISHED"
    assert f"{server}/#/experiments/" in result.stdout
    figures = {a.path for a in client.list_artifacts(found.info.run_id, "figures")}
    assert "figures/confusion_matrix.png" in figures
    mlflow.set_tracking_uri(server)
    [logged] = mlflow.search_logged_models(
        experiment_ids=[found.info.experiment_id], output_format="list"
    )
    model = mlflow.pyfunc.load_model(logged.model_uri)
    assert model.metadata.signature is not None


def test_predict_and_reproduce_through_the_server(server: str, tmp_path: Path) -> None:
    """The registry, prediction and reproduction work the same against a team's server."""
    import os

    from models_fixture import letters, register_champion, write_sources

    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    trained = cli(*TINY, "tracking.experiment=served", f"hydra.run.dir={tmp_path}", env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    client = MlflowClient(server)
    [run] = client.search_runs([client.get_experiment_by_name("served").experiment_id])
    register_champion(f"runs:/{run.info.run_id}/model", env)
    tar = write_sources(tmp_path / "in", letters(20)[0])["tar"]
    predicted = cli(
        "model=models:/notmnist@champion",
        f"input={tar}",
        f"output={tmp_path / 'p.csv'}",
        module="pipeline.predict",
        env=env,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "Read 20 images, skipped 3" in predicted.stdout
    reproduced = cli(run.info.run_id, module="pipeline.reproduce", env=env)
    assert reproduced.returncode == 0, reproduced.stdout[-3000:] + reproduced.stderr[-3000:]
    assert f"reproduces run {run.info.run_id} metric for metric" in reproduced.stdout
