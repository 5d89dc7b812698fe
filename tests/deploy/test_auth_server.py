"""The team server as docker-compose.yml runs it, without Docker: the same `mlflow server
--app-name basic-auth` command, environment and auth config, the same account bootstrap script,
with the local PostgreSQL standing in for the `db` service (a tracking database and a separate
auth database, both made here and dropped after)."""

from __future__ import annotations

import configparser
import dataclasses
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
import requests
from compose_env import load
from conftest import PG, TINY, cli, free_port, mlflow_server, postgres_up
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# what a team's .env holds (passwords of MLflow's minimum length, 12)
ENV = {
    "POSTGRES_PASSWORD": "pg-secret-0123456789",
    "MLFLOW_ADMIN_PASSWORD": "admin-secret-0123456789",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-secret-0123456789",
    "MLFLOW_SERVICE_PASSWORD": "service-secret-0123456789",
    "MLFLOW_VIEWER_PASSWORD": "viewer-secret-0123456789",
}
CONCURRENT_RUNS = 8
SignIn = Callable[[tuple[str, str]], MlflowClient]


@dataclasses.dataclass
class Server:
    uri: str
    artifacts: Path
    admin: tuple[str, str]
    service: tuple[str, str]
    viewer: tuple[str, str]
    bootstrap_logs: list[str]

    def env(self, account: tuple[str, str] | None) -> dict[str, str]:
        """The environment of a client signed in as `account` (anonymous if None)."""
        env = {**os.environ, "MLFLOW_TRACKING_URI": self.uri}
        env.pop("MLFLOW_TRACKING_USERNAME", None)
        env.pop("MLFLOW_TRACKING_PASSWORD", None)
        if account is not None:
            env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = account
        return env


def _with(command: list[str], **flags: str) -> list[str]:
    """`command` with the values of `--flag=value` options replaced."""
    out = []
    for arg in command:
        flag = arg.split("=", 1)[0]
        key = flag.removeprefix("--").replace("-", "_")
        out.append(f"{flag}={flags[key]}" if arg.startswith("--") and key in flags else arg)
    return out


def _bootstrap(env: dict[str, str]) -> str:
    """docker/bootstrap_accounts.py, as the `mlflow-init` service runs it."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "bootstrap_accounts.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not postgres_up():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import psycopg

    suffix = uuid.uuid4().hex[:8]
    tracking_db, auth_db = f"mlflow_test_{suffix}", f"mlflow_auth_test_{suffix}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        for db in (tracking_db, auth_db):
            conn.execute(f"CREATE DATABASE {db}")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    services = load(ROOT / "docker-compose.yml", ENV)["services"]
    tmp = tmp_path_factory.mktemp("server")

    # the committed auth config, its database moved from the `db` service to the local one
    auth = configparser.ConfigParser()
    auth.read(ROOT / "docker" / "basic_auth.ini")
    auth["mlflow"]["database_uri"] = f"{PG}/{auth_db}"
    auth_config = tmp / "basic_auth.ini"
    with auth_config.open("w") as f:
        auth.write(f)

    mlflow_service = services["mlflow"]
    env = {**os.environ, **mlflow_service["environment"]}
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config)
    [allowed] = [a for a in mlflow_service["command"] if a.startswith("--allowed-hosts=")]
    artifacts = tmp / "artifacts"
    command = _with(
        mlflow_service["command"],
        backend_store_uri=f"{PG}/{tracking_db}",
        artifacts_destination=str(artifacts),
        host="127.0.0.1",
        port=str(port),
        # the compose hosts (the anonymous request came as localhost:5000) and this one
        allowed_hosts=f"{allowed.split('=', 1)[1]},127.0.0.1:{port}",
    )
    assert command[:2] == ["mlflow", "server"]
    log = tmp / "server.log"
    try:
        with mlflow_server([*command[1:], "--workers=1"], uri, log, env):
            init = {
                **os.environ,
                **services["mlflow-init"]["environment"],
                "MLFLOW_TRACKING_URI": uri,
            }
            logs = [_bootstrap(init), _bootstrap(init)]  # the second as on every later `up`
            account = services["mlflow-init"]["environment"]
            yield Server(
                uri=uri,
                artifacts=artifacts,
                admin=(account["MLFLOW_TRACKING_USERNAME"], account["MLFLOW_TRACKING_PASSWORD"]),
                service=(account["MLFLOW_SERVICE_USERNAME"], account["MLFLOW_SERVICE_PASSWORD"]),
                viewer=(account["MLFLOW_VIEWER_USERNAME"], account["MLFLOW_VIEWER_PASSWORD"]),
                bootstrap_logs=logs,
            )
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            for db in (tracking_db, auth_db):
                conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


@pytest.fixture
def signed_in(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[SignIn]:
    """`signed_in(account)`: this process's MLflow client talks to the server as `account`."""

    def sign_in(account: tuple[str, str]) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", account[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", account[1])
        mlflow.set_tracking_uri(server.uri)
        return MlflowClient(server.uri)

    yield sign_in
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def team_run(server: Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One pipeline run by the service account, as `docker compose run train` does it, into an
    experiment that a person (the admin) made, so the account needs its grant, not ownership:
    (experiment id, run id)."""
    made = requests.post(
        f"{server.uri}/api/2.0/mlflow/experiments/create",
        json={"name": "team"},
        auth=server.admin,
        timeout=30,
    )
    assert made.status_code == 200, made.text
    out = tmp_path_factory.mktemp("team_run")
    result = cli(
        *TINY,
        f"tracking.uri={server.uri}",
        "tracking.experiment=team",
        f"hydra.run.dir={out}",
        env=server.env(server.service),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{server.uri}/#/experiments/" in result.stdout  # where to look at the run
    found = requests.post(
        f"{server.uri}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [_experiment_id(server, "team")]},
        auth=server.viewer,
        timeout=30,
    ).json()["runs"]
    [run] = found
    return run["info"]["experiment_id"], run["info"]["run_id"]


def _experiment_id(server: Server, name: str) -> str:
    got = requests.get(
        f"{server.uri}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": name},
        auth=server.viewer,
        timeout=30,
    )
    assert got.status_code == 200, got.text
    return got.json()["experiment"]["experiment_id"]


def test_bootstrap_makes_the_accounts_idempotently(server: Server) -> None:
    first, second = server.bootstrap_logs
    assert f"service account '{server.service[0]}': created; EDIT on experiment *" in first
    assert f"viewer account '{server.viewer[0]}': created; READ on experiment *" in first
    assert "created" not in second
    assert second.count("password reset") == 2
    for name in (server.service[0], server.viewer[0]):
        user = requests.get(
            f"{server.uri}/api/2.0/mlflow/users/get",
            params={"username": name},
            auth=server.admin,
            timeout=30,
        )
        assert user.json()["user"]["is_admin"] is False


def test_anonymous_requests_are_refused(server: Server, team_run: tuple[str, str]) -> None:
    experiment_id, run_id = team_run
    api = f"{server.uri}/api/2.0/mlflow"
    artifact = f"{server.uri}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/x.txt"
    # the requests, with the Host header a browser on the server's machine sends
    headers = {"Host": "localhost:5000"}
    for auth in (None, (server.service[0], "wrong-password-0123")):
        assert (
            requests.get(
                f"{api}/experiments/search",
                params={"max_results": 5},
                headers=headers,
                auth=auth,
                timeout=30,
            ).status_code
            == 401
        )
        assert (
            requests.post(
                f"{api}/experiments/create",
                json={"name": "anon"},
                headers=headers,
                auth=auth,
                timeout=30,
            ).status_code
            == 401
        )
        assert (
            requests.put(artifact, data=b"x", headers=headers, auth=auth, timeout=30).status_code
            == 401
        )
        assert requests.get(artifact, headers=headers, auth=auth, timeout=30).status_code == 401
        assert (
            requests.get(f"{server.uri}/", headers=headers, auth=auth, timeout=30).status_code
            == 401
        )
    # the one open route: compose's healthcheck
    assert requests.get(f"{server.uri}/health", timeout=30).status_code == 200


def test_viewer_reads_but_cannot_write(
    server: Server, team_run: tuple[str, str], signed_in: SignIn
) -> None:
    experiment_id, run_id = team_run
    client = signed_in(server.viewer)
    assert client.get_run(run_id).info.status == "FINISHED"
    with pytest.raises(MlflowException) as refused:
        client.create_run(experiment_id)
    assert refused.value.get_http_status_code() == 403
    with pytest.raises(MlflowException) as refused:
        client.log_metric(run_id, "forged", 1.0)
    assert refused.value.get_http_status_code() == 403
    api = f"{server.uri}/api/2.0/mlflow"
    artifact = f"{server.uri}/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}"
    v = {"auth": server.viewer, "timeout": 30}
    assert requests.put(f"{artifact}/artifacts/forged.txt", data=b"x", **v).status_code == 403
    assert requests.post(f"{api}/runs/delete", json={"run_id": run_id}, **v).status_code == 403
    assert (
        requests.post(
            f"{api}/experiments/set-experiment-tag",
            json={"experiment_id": experiment_id, "key": "k", "value": "v"},
            **v,
        ).status_code
        == 403
    )
    assert (
        requests.post(
            f"{api}/users/create",
            json={"username": "intruder", "password": "intruder-0123456789"},
            **v,
        ).status_code
        == 403
    )
    assert (
        requests.patch(
            f"{api}/users/update-admin", json={"username": server.viewer[0], "is_admin": True}, **v
        ).status_code
        == 403
    )
    # what it can do: read, and download artifacts through the server
    figures = client.list_artifacts(run_id, "figures")
    assert any(f.path == "figures/confusion_matrix.png" for f in figures)


def test_service_account_runs_the_pipeline_end_to_end(
    server: Server, team_run: tuple[str, str], signed_in: SignIn
) -> None:
    experiment_id, run_id = team_run
    client = signed_in(server.viewer)  # everything below is read back by the viewer
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.user_id == server.service[0]
    assert run.data.params["train.epochs"] == "3"
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3]
    # artifacts went through the server's proxy into its artifacts destination
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    assert (server.artifacts / experiment_id / run_id / "artifacts" / "figures").is_dir()
    [logged] = mlflow.search_logged_models(experiment_ids=[experiment_id], output_format="list")
    assert logged.source_run_id == run_id
    model = mlflow.pyfunc.load_model(logged.model_uri)
    assert model.metadata.signature is not None
    assert (server.artifacts / experiment_id / "models" / logged.model_id).is_dir()


def test_concurrent_runs_log_the_same_dataset(server: Server, signed_in: SignIn) -> None:
    """What lost a run out of 8 concurrent ones: runs of one experiment logging the same
    dataset at the same moment. MLflow's store looks the dataset up, then inserts it, without a
    lock; the losers got a 400 (unique violation) and their pipeline run FAILED, until
    `pipeline.tracking.log_input` tried again. Without the retry about 1 in 4 of these calls
    failed here."""
    import numpy as np

    from pipeline.tracking.records import log_input

    client = signed_in(server.service)
    experiment_id = client.create_experiment("same-dataset")
    failures: list[str] = []
    run_ids: list[str] = []

    def log(run_id: str, dataset: mlflow.data.Dataset, barrier: threading.Barrier) -> None:
        with mlflow.start_run(run_id=run_id):
            barrier.wait()
            try:
                log_input(dataset, context="train")
            except MlflowException as exc:
                failures.append(str(exc)[:300])

    for trial in range(5):
        runs = [client.create_run(experiment_id).info.run_id for _ in range(CONCURRENT_RUNS)]
        run_ids += runs
        dataset = mlflow.data.from_numpy(
            np.zeros((10, 3)), name=f"split-{trial}", digest=f"digest-{trial}"
        )
        barrier = threading.Barrier(len(runs))
        threads = [threading.Thread(target=log, args=(r, dataset, barrier)) for r in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures, failures
    for run_id in run_ids:
        assert len(client.get_run(run_id).inputs.dataset_inputs) == 1


def test_eight_concurrent_runs_lose_nothing(
    server: Server, team_run: tuple[str, str], tmp_path: Path, signed_in: SignIn
) -> None:
    # the schema exists already (made by the first request, team_run's) so the runs below
    # race only on what a team's runs race on: the experiment, runs, metrics, artifacts
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                *TINY,
                "train.epochs=1",
                f"tracking.uri={server.uri}",
                "tracking.experiment=concurrent",
                f"hydra.run.dir={tmp_path / str(i)}",
            ],
            cwd=ROOT,
            env=server.env(server.service),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(CONCURRENT_RUNS)
    ]
    failures = [
        err[-2000:] for p in procs if (err := p.communicate(timeout=600)[1]) and p.returncode
    ]
    seconds = time.monotonic() - start
    assert not failures, failures
    client = signed_in(server.viewer)
    runs = client.search_runs([_experiment_id(server, "concurrent")])
    lost = CONCURRENT_RUNS - sum(
        r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics for r in runs
    )
    print(f"\n{CONCURRENT_RUNS} concurrent runs: {lost} lost, {seconds:.1f} s wall")
    assert len(runs) == CONCURRENT_RUNS
    assert lost == 0
    models = mlflow.search_logged_models(
        experiment_ids=[_experiment_id(server, "concurrent")], output_format="list"
    )
    assert sorted(m.source_run_id for m in models) == sorted(r.info.run_id for r in runs)
