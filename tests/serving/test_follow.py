"""`notmnist serve` on a trained champion, as a team runs it: a client sends
requests throughout while `notmnist registry` promotes a new version and rolls it
back. No request fails, the answers move to the new version and back within poll_seconds plus
the load time, `/version` agrees, and an oversized request gets 413."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import cli, free_port
from mlflow.tracking import MlflowClient
from models_fixture import Champion, letters, register_champion
from small_registry import wait_until_healthy

pytestmark = pytest.mark.slow

POLL_SECONDS = 1.0
SLACK_SECONDS = 10.0  # a shared 2-core machine: scheduling, the registry command's own exit


@dataclass
class Answers:
    """(received at, status, version) of every request, per client thread."""

    threads: dict[int, list[tuple[float, int, str | None]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _send(url: str, body: bytes, stop: threading.Event, answers: Answers, key: int) -> None:
    mine = answers.threads.setdefault(key, [])
    while not stop.is_set():
        request = urllib.request.Request(
            f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                json.loads(answer.read())
                mine.append((time.monotonic(), answer.status, answer.headers["X-Model-Version"]))
        except (OSError, ValueError) as exc:
            answers.errors.append(f"{type(exc).__name__}: {exc}")


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def store(champion: Champion, tmp_path: Path) -> str:
    """A copy of the champion's registry (so that the session's stays as it is), with a
    second version of the same logged model and the champion history retraining keeps."""
    db = tmp_path / "mlflow.db"
    shutil.copyfile(champion.store_uri.removeprefix("sqlite:///"), db)
    uri = f"sqlite:///{db}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    assert register_champion(champion.model_uri, env) == "2"
    client = MlflowClient(uri)
    client.set_registered_model_alias("notmnist", "champion", "1")
    client.set_registered_model_tag("notmnist", "champion.history", "1")
    return uri


@pytest.fixture
def server(store: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    (tmp_path / "work").mkdir()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "pipeline", "serve"),
            *(f"port={port}", f"poll_seconds={POLL_SECONDS}", "max_images=64"),
        ],
        cwd=tmp_path / "work",
        env={**os.environ, "MLFLOW_TRACKING_URI": store},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, tmp_path / "serve.log")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        log.close()


def _move(store: str, *args: str) -> float:
    """`notmnist registry <args>`; when it returned."""
    moved = cli("registry", *args, env={**os.environ, "MLFLOW_TRACKING_URI": store})
    assert moved.returncode == 0, moved.stderr[-3000:]
    return time.monotonic()


def _last_other(answers: Answers, version: str, start: float, end: float) -> float:
    """How long after `start` the last answer (received before `end`) from another version
    than `version` came: 0 when none did."""
    other = [
        t
        for answered in answers.threads.values()
        for t, _, v in answered
        if start < t < end and v != version
    ]
    return max(other, default=start) - start


def test_promotion_and_rollback_reach_clients_with_no_failed_request(
    server: tuple[str, subprocess.Popen[str]], store: str, champion: Champion, tmp_path: Path
) -> None:
    url, proc = server
    assert _get(f"{url}/version")[1]["version"] == "1"
    assert _get(f"{url}/version")[1]["run_id"] == champion.run_id
    images, _ = letters(4)
    body = json.dumps({"inputs": images.tolist()}).encode()
    answers, stop = Answers(), threading.Event()
    clients = [threading.Thread(target=_send, args=(url, body, stop, answers, i)) for i in range(2)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(1)
        promoted = _move(store, "promote", "2")
        time.sleep(POLL_SECONDS + 4)
        loaded = _get(f"{url}/version")[1]
        rolling_back = time.monotonic()
        rolled_back = _move(store, "rollback")
        time.sleep(POLL_SECONDS + 4)
        restored = _get(f"{url}/version")[1]
        stopping = time.monotonic()
        too_many = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps({"inputs": letters(70)[0].tolist()}).encode(),  # 70 > max_images
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(too_many, timeout=30)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=60)

    assert answers.errors == []
    statuses = {s for answered in answers.threads.values() for _, s, _ in answered}
    assert statuses == {200}
    for answered in answers.threads.values():  # per client: 1, then 2, then 1 again
        versions = [v for _, _, v in answered]
        runs = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
        assert runs == ["1", "2", "1"], runs
    assert loaded["version"] == "2"
    assert restored["version"] == "1"
    # the alias had moved by the time the command returned: from then on, within the poll
    # interval and the load time, every answer is from the version it names
    bound = POLL_SECONDS + SLACK_SECONDS
    assert _last_other(answers, "2", promoted, rolling_back) < bound + loaded["load_seconds"]
    assert _last_other(answers, "1", rolled_back, stopping) < bound + restored["load_seconds"]
    assert refused.value.code == 413
    assert "at most 64 (max_images)" in json.loads(refused.value.read())["message"]

    proc.send_signal(signal.SIGTERM)  # stops cleanly, answering what is in flight
    assert proc.wait(timeout=60) == 0
    log = (tmp_path / "serve.log").read_text()
    assert "version 1 -> 2 (run " in log
    assert "version 2 -> 1 (run " in log
    assert "stopped by SIGTERM, the requests in flight answered" in log
    assert "Traceback" not in log
    assert list((tmp_path / "work").iterdir()) == []  # it wrote nothing where it ran
