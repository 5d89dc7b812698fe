"""The team server as docker-compose.yml runs it, without Docker: the same `mlflow server
--app-name basic-auth` command, environment and auth config, the same account bootstrap script,
with the local PostgreSQL standing in for the `db` service (a tracking database and a separate
auth database, both made here and dropped after)."""

from __future__ import annotations

import configparser
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from compose_env import load
from conftest import PG, TINY, cli, free_port, mlflow_server, postgres_up
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from retrain_helpers import SMALL, Sources

from pipeline.names import Tag

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
CONCURRENT_RUNS = 8  # runs logging the same dataset at once (threads of this process)
CONCURRENT_PIPELINES = 4  # pipeline runs at once (subprocesses: each imports TensorFlow)
SignIn = Callable[[tuple[str, str]], MlflowClient]


@dataclasses.dataclass
class Server:
    uri: str
    tracking_db: str  # the tracking database's name on the local PostgreSQL
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
            account = services["mlflow-init"]["environment"]
            first = _bootstrap(init)
            # the viewer gets more than its role; the next `up` takes it back
            admin = (account["MLFLOW_TRACKING_USERNAME"], account["MLFLOW_TRACKING_PASSWORD"])
            _widen_viewer(uri, admin, account["MLFLOW_VIEWER_USERNAME"])
            logs = [first, _bootstrap(init)]  # the second as on every later `up`
            yield Server(
                uri=uri,
                tracking_db=tracking_db,
                artifacts=artifacts,
                admin=admin,
                service=(account["MLFLOW_SERVICE_USERNAME"], account["MLFLOW_SERVICE_PASSWORD"]),
                viewer=(account["MLFLOW_VIEWER_USERNAME"], account["MLFLOW_VIEWER_PASSWORD"]),
                bootstrap_logs=logs,
            )
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            for db in (tracking_db, auth_db):
                conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def _widen_viewer(uri: str, admin: tuple[str, str], viewer: str) -> None:
    """What the viewer held on the server of the issue, or someone gives it by hand: the
    right to create (USE on the workspace, on its role) and MANAGE on a registered model
    (its own grant, MLflow's for a creator)."""
    v3 = f"{uri}/api/3.0/mlflow"
    roles = requests.get(
        f"{v3}/roles/list", params={"workspace": "default"}, auth=admin, timeout=30
    ).json()["roles"]
    [role_id] = [r["id"] for r in roles if r["name"] == "viewers"]
    for path, body in (
        (
            "roles/permissions/add",
            {
                "role_id": role_id,
                "resource_type": "workspace",
                "resource_pattern": "*",
                "permission": "USE",
            },
        ),
        (
            "users/permissions/grant",
            {
                "username": viewer,
                "resource_type": "registered_model",
                "resource_id": "notmnist",
                "permission": "MANAGE",
            },
        ),
    ):
        done = requests.post(f"{v3}/{path}", json=body, auth=admin, timeout=30)
        assert done.status_code == 200, done.text


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
    service = "USE on workspace *, EDIT on experiment *, MANAGE on registered_model *"
    viewer = "READ on experiment *, READ on registered_model *"
    assert f"service account '{server.service[0]}': created; role 'trainers': {service}" in first
    assert f"viewer account '{server.viewer[0]}': created; role 'viewers': {viewer}" in first
    assert "created" not in second
    assert second.count("password reset") == 2
    again = f"viewer account '{server.viewer[0]}': password reset; role 'viewers': {viewer}"
    assert f"{again}; 1 direct grant(s) revoked" in second  # its MANAGE on `notmnist`
    v3 = f"{server.uri}/api/3.0/mlflow"
    for (name, _), role, grants in (
        (server.service, "trainers", service),
        (server.viewer, "viewers", viewer),
    ):
        user = requests.get(
            f"{server.uri}/api/2.0/mlflow/users/get",
            params={"username": name},
            auth=server.admin,
            timeout=30,
        )
        assert user.json()["user"]["is_admin"] is False
        roles = requests.get(
            f"{v3}/users/roles/list", params={"username": name}, auth=server.admin, timeout=30
        ).json()["roles"]
        # besides MLflow's own per-user role (`__user_<id>__`: a creator's MANAGE grants)
        [named] = [r for r in roles if not r["name"].startswith("__user_")]
        if name == server.viewer[0]:  # which the viewer has none of
            assert [p for r in roles if r is not named for p in r["permissions"]] == []
        assert (named["name"], named["workspace"]) == (role, "default")
        held = requests.get(
            f"{v3}/roles/permissions/list",
            params={"role_id": named["id"]},
            auth=server.admin,
            timeout=30,
        ).json()["role_permissions"]
        # exactly these: the USE given to the viewers between the two runs is gone
        shown = {f"{p['permission']} on {p['resource_type']} {p['resource_pattern']}" for p in held}
        assert shown == set(grants.split(", "))


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
    with pytest.raises(MlflowException) as refused:  # not even an experiment of its own
        client.create_experiment("viewer's own")
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
    # (under the workspace: compose runs the server with --enable-workspaces)
    workspace = server.artifacts / "workspaces" / "default"
    assert (workspace / experiment_id / run_id / "artifacts" / "figures").is_dir()
    [logged] = mlflow.search_logged_models(experiment_ids=[experiment_id], output_format="list")
    assert logged.source_run_id == run_id
    model = mlflow.pyfunc.load_model(logged.model_uri)
    assert model.metadata.signature is not None
    assert (workspace / experiment_id / "models" / logged.model_id).is_dir()


def test_concurrent_runs_log_the_same_dataset(server: Server, signed_in: SignIn) -> None:
    """What lost a run out of 8 concurrent ones: runs of one experiment logging the same
    dataset at the same moment. MLflow's store looks the dataset up, then inserts it, without a
    lock; the losers got a 400 (unique violation) and their pipeline run FAILED, until
    `pipeline.tracking.log_input` tried again. Without the retry about 1 in 4 of these calls
    failed here."""
    import numpy as np

    from pipeline.tracking.recording.records import log_input

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


def test_concurrent_pipeline_runs_lose_nothing(
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
        for i in range(CONCURRENT_PIPELINES)
    ]
    failures = [
        err[-2000:] for p in procs if (err := p.communicate(timeout=600)[1]) and p.returncode
    ]
    seconds = time.monotonic() - start
    assert not failures, failures
    client = signed_in(server.viewer)
    runs = client.search_runs([_experiment_id(server, "concurrent")])
    lost = CONCURRENT_PIPELINES - sum(
        r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics for r in runs
    )
    print(f"\n{CONCURRENT_PIPELINES} concurrent runs: {lost} lost, {seconds:.1f} s wall")
    assert len(runs) == CONCURRENT_PIPELINES
    assert lost == 0
    models = mlflow.search_logged_models(
        experiment_ids=[_experiment_id(server, "concurrent")], output_format="list"
    )
    assert sorted(m.source_run_id for m in models) == sorted(r.info.run_id for r in runs)


@dataclasses.dataclass
class Retrained:
    """The first scheduled retrain on the fresh server: the scheduler's output and exit code,
    the audit runs after it, its data, and `home` (its retrain lock and data cache)."""

    output: str
    returncode: int
    audits: list[dict[str, Any]]
    sources: Sources
    home: Path


def _pipeline_env(server: Server, account: tuple[str, str] | None, home: Path) -> dict[str, str]:
    """`server.env(account)`, the retrain lock and the data cache in `home`, not the checkout."""
    return {
        **server.env(account),
        "PIPELINE_HOME": str(home),
        "PIPELINE_CACHE_DIR": str(home / "cache"),
    }


def _audit_runs(server: Server) -> list[dict[str, Any]]:
    got = requests.get(
        f"{server.uri}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": "retraining"},
        auth=server.viewer,
        timeout=30,
    )
    if got.status_code != 200:  # not made yet (the viewer may not learn which names exist)
        return []
    found = requests.post(
        f"{server.uri}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [got.json()["experiment"]["experiment_id"]]},
        auth=server.viewer,
        timeout=30,
    ).json()
    return list(found.get("runs", []))


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


@pytest.fixture(scope="module")
def scheduled_retrain(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Retrained:
    """The compose `scheduler` service's own command (entrypoint, overrides, environment),
    firing every second instead of at 03:00 and on small synthetic letters, stopped with
    SIGTERM (as `docker compose stop` does) once its first retrain has ended."""
    tmp = tmp_path_factory.mktemp("scheduler")
    src = Sources(tmp / "sources")
    scheduler = load(ROOT / "docker-compose.yml", ENV)["services"]["scheduler"]
    places = {"data.path": src.v1, "retrain.holdout.path": src.holdout}
    overrides = [
        f"{key}={places[key]}" if (key := arg.split("=", 1)[0]) in places else arg
        for arg in scheduler["command"]
    ]
    assert overrides != scheduler["command"]
    given = {arg.split("=", 1)[0] for arg in overrides}
    small = [arg for arg in SMALL if arg.split("=", 1)[0] not in given]
    entry = scheduler["entrypoint"]
    assert entry[:2] == ["python", "-m"]
    # the service's environment (its account from .env), the server moved here
    env = {**_pipeline_env(server, None, tmp), **scheduler["environment"]}
    env["MLFLOW_TRACKING_URI"] = server.uri
    assert env["MLFLOW_TRACKING_USERNAME"] == server.service[0]
    proc = subprocess.Popen(
        [
            sys.executable,
            *entry[1:],
            *overrides,
            *small,
            "schedule.interval_s=1",
            f"hydra.run.dir={tmp / 'run'}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if any("Retrain ended with exit code" in line for line in lines):
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    reader.join(timeout=30)
    return Retrained("".join(lines), proc.returncode, _audit_runs(server), src, tmp)


def test_first_scheduled_retrain_on_a_fresh_server_makes_the_champion(
    server: Server, scheduled_retrain: Retrained, signed_in: SignIn
) -> None:
    """What failed on every fire: the service account read `notmnist@champion` of a model that
    did not exist, got 403 and died with a traceback."""
    done = scheduled_retrain
    assert done.returncode == 0, done.output[-3000:]
    assert "retrain: promoted: no champion yet" in done.output, done.output[-3000:]
    assert "Permission denied" not in done.output
    assert "schedule: stopped" in done.output
    first = min(done.audits, key=lambda r: r["info"]["start_time"])
    tags = _tags(first)
    assert (tags[Tag.DECISION], tags[Tag.CHAMPION_AFTER]) == ("promoted", "1"), tags
    # SIGTERM may have met a second fire: whatever ran, nothing is left RUNNING
    assert all(r["info"]["status"] != "RUNNING" for r in done.audits)
    client = signed_in(server.viewer)  # read back by the viewer
    champion = client.get_model_version_by_alias("notmnist", "champion")
    assert champion.version == "1"
    training = client.get_run(champion.tags[Tag.TRAINING_RUN_ID])  # the version's few tags
    assert training.data.tags[Tag.AUDIT_RUN_ID] == first["info"]["run_id"]
    assert first["info"]["run_name"] == "retrain: promoted v1"
    assert client.get_run(champion.run_id).info.user_id == server.service[0]


def test_viewer_gets_403_on_every_registry_write(
    server: Server, scheduled_retrain: Retrained, signed_in: SignIn
) -> None:
    """The viewer squatted `notmnist` (MLflow lets any signed-in user create a registered
    model, unless workspaces are on and creating needs USE on the workspace), registered the
    service account's runs under it and moved `champion`."""
    client = signed_in(server.viewer)
    champion = client.get_model_version_by_alias("notmnist", "champion")
    model = client.get_registered_model("notmnist")
    name, version = "notmnist", str(champion.version)
    source = {"source": champion.source, "run_id": champion.run_id}
    v2, v3 = f"{server.uri}/api/2.0/mlflow", f"{server.uri}/api/3.0/mlflow"
    writes = [
        ("POST", f"{v2}/registered-models/create", {"name": "squatted"}),
        ("POST", f"{server.uri}/ajax-api/2.0/mlflow/registered-models/create", {"name": "ui"}),
        ("POST", f"{v2}/model-versions/create", {"name": name, **source}),
        ("POST", f"{v2}/registered-models/alias", {"name": name, "alias": "x", "version": version}),
        ("DELETE", f"{v2}/registered-models/alias", {"name": name, "alias": "champion"}),
        ("POST", f"{v2}/registered-models/set-tag", {"name": name, "key": "k", "value": "v"}),
        ("DELETE", f"{v2}/registered-models/delete-tag", {"name": name, "key": "k"}),
        (
            "POST",
            f"{v2}/model-versions/set-tag",
            {"name": name, "version": version, "key": "k", "value": "v"},
        ),
        (
            "DELETE",
            f"{v2}/model-versions/delete-tag",
            {"name": name, "version": version, "key": Tag.DECISION},
        ),
        ("PATCH", f"{v2}/registered-models/update", {"name": name, "description": "forged"}),
        (
            "PATCH",
            f"{v2}/model-versions/update",
            {"name": name, "version": version, "description": "forged"},
        ),
        (
            "POST",
            f"{v2}/model-versions/transition-stage",
            {
                "name": name,
                "version": version,
                "stage": "Production",
                "archive_existing_versions": False,
            },
        ),
        ("POST", f"{v2}/registered-models/rename", {"name": name, "new_name": "renamed"}),
        ("DELETE", f"{v2}/model-versions/delete", {"name": name, "version": version}),
        ("DELETE", f"{v2}/registered-models/delete", {"name": name}),
        # nor may it give itself the right to
        (
            "POST",
            f"{v3}/users/permissions/grant",
            {
                "username": server.viewer[0],
                "resource_type": "registered_model",
                "resource_id": name,
                "permission": "MANAGE",
            },
        ),
    ]
    answers = {
        f"{method} {url.split('/mlflow/', 1)[1]}": requests.request(
            method, url, json=body, auth=server.viewer, timeout=30
        ).status_code
        for method, url, body in writes
    }
    assert answers == dict.fromkeys(answers, 403)
    # and nothing changed
    assert client.get_model_version_by_alias(name, "champion").version == version
    after = client.get_registered_model(name)
    assert (after.aliases, after.tags, after.description) == (
        model.aliases,
        model.tags,
        model.description,
    )
    assert [m.name for m in client.search_registered_models()] == [name]


def _retrain(
    server: Server, done: Retrained, account: tuple[str, str], run_dir: Path
) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline.retrain` as `account`, on the data of the first scheduled retrain."""
    src = done.sources
    return cli(
        "retrain",
        *SMALL,
        f"data.path={src.v1}",
        f"retrain.holdout.path={src.holdout}",
        f"hydra.run.dir={run_dir}",
        env=_pipeline_env(server, account, done.home),
        timeout=300,
    )


def _failed_audit(server: Server, before: set[str], line: str) -> None:
    """The one audit run made since `before` ended FAILED, with `line` in its `error` tag."""
    [audit] = [r for r in _audit_runs(server) if r["info"]["run_id"] not in before]
    assert audit["info"]["status"] == "FAILED"
    tags = _tags(audit)
    assert tags[Tag.DECISION] == "failed"
    assert line.removeprefix("registry error: ") in tags[Tag.ERROR]


def test_retrain_refused_by_the_server_is_one_line_and_a_failed_audit_run(
    server: Server, scheduled_retrain: Retrained, tmp_path: Path
) -> None:
    """A server's 403 ends `retrain` with one line naming the request and the account, exit
    code 1, and its audit run FAILED with that line, not with a traceback."""
    # the viewer may not even make the audit run
    viewer = _retrain(server, scheduled_retrain, server.viewer, tmp_path / "viewer")
    assert viewer.returncode == 1, viewer.stderr[-3000:]
    assert viewer.stderr.strip().splitlines()[-1] == (
        f"registry error: POST runs/create as {server.viewer[0]}: 403 Permission denied"
    )
    assert "Traceback" not in viewer.stderr
    # a person the admin let log runs, not touch the registry: the audit run exists, the
    # registry refuses the model (made by the service account, unseen by this person)
    person = ("person", "person-secret-0123456789")
    for path, body in (
        ("2.0/mlflow/users/create", {"username": person[0], "password": person[1]}),
        (
            "3.0/mlflow/users/permissions/grant",
            {
                "username": person[0],
                "resource_type": "experiment",
                "resource_id": "*",
                "permission": "EDIT",
            },
        ),
    ):
        made = requests.post(f"{server.uri}/api/{path}", json=body, auth=server.admin, timeout=30)
        assert made.status_code == 200, made.text
    before = {r["info"]["run_id"] for r in _audit_runs(server)}
    refused = _retrain(server, scheduled_retrain, person, tmp_path / "person")
    assert refused.returncode == 1, refused.stderr[-3000:]
    line = f"registry error: POST registered-models/create as {person[0]}: 403 Permission denied"
    assert refused.stderr.strip().splitlines()[-1] == line
    assert "Traceback" not in refused.stderr
    _failed_audit(server, before, line)


def test_retrain_on_a_server_error_is_one_line_and_a_failed_audit_run(
    server: Server, scheduled_retrain: Retrained, tmp_path: Path
) -> None:
    """A 503, which MLflow's client retries before it gives up: the server's database cannot
    lock the registry's table in time (a lock timeout is an OperationalError, which MLflow
    answers with 503 TEMPORARILY_UNAVAILABLE). The same one line, exit code 1, FAILED audit."""
    import psycopg

    db = server.tracking_db
    kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"

    def lock_timeout(setting: str) -> None:
        # the server's pooled connections are dropped, so that its new ones take the setting
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {db} {setting}")
            admin.execute(kill, (db,))

    before = {r["info"]["run_id"] for r in _audit_runs(server)}
    lock_timeout("SET lock_timeout = '200ms'")
    try:
        with psycopg.connect(f"{PG}/{db}") as holder:
            holder.execute("LOCK TABLE registered_models IN ACCESS EXCLUSIVE MODE")
            failed = _retrain(server, scheduled_retrain, server.service, tmp_path)
    finally:
        lock_timeout("RESET lock_timeout")
    assert failed.returncode == 1, failed.stderr[-3000:]
    line = (
        f"registry error: GET registered-models/search as {server.service[0]}: 503 Service "
        "Unavailable, also when retried (the server's log says why)"
    )
    assert failed.stderr.strip().splitlines()[-1] == line
    assert "Traceback" not in failed.stderr
    _failed_audit(server, before, line)
