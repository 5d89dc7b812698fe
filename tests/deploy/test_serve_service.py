"""The compose `serve` service without Docker: its exact command and environment, signed in as
the read-only viewer, against the team server as tests/deploy/test_auth_server.py runs it
(the compose `mlflow` command on fresh local PostgreSQL databases), on a champion that the
service account registered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from compose_env import load
from conftest import free_port
from make_sources import letters
from small_registry import wait_until_healthy
from test_auth_server import ENV, ROOT, Server, server  # noqa: F401

pytestmark = pytest.mark.slow


def _serve_service() -> dict:
    return load(ROOT / "docker-compose.yml", ENV)["services"]["serve"]


def _with_settings(command: list[str], **settings: str) -> list[str]:
    """`command` with the values of its `key=value` settings replaced."""
    return [
        f"{arg.split('=', 1)[0]}={settings[arg.split('=', 1)[0]]}"
        if "=" in arg and arg.split("=", 1)[0] in settings
        else arg
        for arg in command
    ]


def _register_champion(team: Server, monkeypatch: pytest.MonkeyPatch) -> tuple[str, object]:
    """A small network logged and registered as `notmnist@champion` by the service account."""
    import keras
    from conftest import new_model

    from pipeline.tracking.models.classifier import log_keras_model

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", team.service[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team.service[1])
    mlflow.set_tracking_uri(team.uri)
    try:
        mlflow.set_experiment("serve-service")
        keras.utils.set_random_seed(4)
        network = new_model(hidden_units=[8], dropout_rate=0.0)
        with mlflow.start_run():
            model_uri = log_keras_model(network, np.zeros((2, 28, 28), dtype=np.uint8))
        version = mlflow.register_model(model_uri, "notmnist").version
        mlflow.MlflowClient().set_registered_model_alias("notmnist", "champion", version)
    finally:
        mlflow.set_tracking_uri(None)
    return str(version), network


def test_the_serve_service_answers_as_the_viewer(
    server: Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    service = _serve_service()
    assert service["environment"]["MLFLOW_TRACKING_USERNAME"] == server.viewer[0]
    assert service["environment"]["MLFLOW_TRACKING_PASSWORD"] == server.viewer[1]
    [container_port] = [a.split("=", 1)[1] for a in service["command"] if a.startswith("port=")]
    assert service["ports"] == [f"127.0.0.1:{container_port}:{container_port}"]
    assert f"localhost:{container_port}/health" in service["healthcheck"]["test"][-1]

    version, network = _register_champion(server, monkeypatch)
    entrypoint = service["entrypoint"]
    assert entrypoint == ["python", "-m", "pipeline", "serve"]
    port = free_port()
    command = [
        sys.executable,
        *entrypoint[1:],
        *_with_settings(service["command"], host="127.0.0.1", port=str(port)),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env |= {**service["environment"], "MLFLOW_TRACKING_URI": server.uri}
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, log)
        images, _ = letters(1)
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps({"inputs": images.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.headers["X-Model-Version"] == version
            body = json.loads(answer.read())
        served = np.asarray([p["probabilities"] for p in body["predictions"]])
        expected = network.predict(images, verbose=0)
        np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
        with urllib.request.urlopen(f"{url}/version", timeout=10) as answer:
            assert json.loads(answer.read())["version"] == version
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert "version none -> " + version in log.read_text()
