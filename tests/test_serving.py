"""The registered model behind `mlflow models serve`, as the docs' recipe starts it: real HTTP
requests on a loopback port, right letters for 0-255 pixels, 400s that say what was expected."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from models_fixture import Champion, letters

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(champion: Champion, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow models serve -m models:/notmnist@champion --env-manager local` with the store in
    MLFLOW_TRACKING_URI and the venv's bin on PATH (where `uvicorn` is), from an empty folder."""
    workdir = tmp_path_factory.mktemp("serve")
    port = _free_port()
    env = {
        **champion.env(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [
        *(str(Path(sys.executable).parent / "mlflow"), "models", "serve"),
        *("-m", f"models:/{champion.name}@champion", "--env-manager", "local"),
        *("-h", "127.0.0.1", "-p", str(port)),
    ]
    log = (workdir / "server.log").open("w")
    proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (workdir / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not answer /ping"
            time.sleep(1)
        yield url
        # nothing left behind in the folder it ran in (no stray mlflow.db, no mlruns/)
        assert sorted(p.name for p in workdir.iterdir()) == ["server.log"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _post(url: str, inputs: object) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps({"inputs": inputs}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_pixels_as_json_integers_or_floats_get_the_right_letters(
    server: str, champion: Champion
) -> None:
    images, labels = letters()
    mlflow.set_tracking_uri(champion.store_uri)
    local = np.asarray(mlflow.pyfunc.load_model(champion.model_uri).predict(images)).argmax(1)
    for inputs in (images.tolist(), images.astype(float).tolist()):
        status, body = _post(server, inputs)
        assert status == 200, body
        served = np.asarray(body["predictions"]).argmax(axis=1)
        np.testing.assert_array_equal(served, local)
    accuracy = (local == labels).mean()
    assert accuracy >= 0.7, (accuracy, champion.test_accuracy)  # right letters, not just consistent


@pytest.mark.parametrize(
    ("transform", "said"),
    [
        (lambda x: (x / 255.0).tolist(), "look scaled to 0-1"),
        (lambda x: (x.astype(float) * 0.5 + 0.25).tolist(), "whole numbers"),
        (lambda x: x.reshape(len(x), -1).tolist(), "got shape (4, 784)"),
    ],
    ids=["scaled-0-1", "fractional", "flat"],
)
def test_bad_input_gets_a_400_that_says_what_was_expected(server: str, transform, said) -> None:
    images, _ = letters(4)
    status, body = _post(server, transform(images))
    assert status == 400
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    first = body["message"].splitlines()[0]
    assert first.startswith("expected images of shape (n, 28, 28)")
    assert "0-255" in first
    assert said in first
