"""The serving tests' registry: two real Keras networks (8 hidden units, other seeds, so
that they answer differently), logged as the pipeline logs them into a SQLite store and
registered as versions 1 and 2 of `notmnist`, with `champion` on version 1; and version 3,
whose files do not exist (a version that fails to load). And a wait for a server process."""

from __future__ import annotations

import logging
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from pipeline.serving.app import PATHS, Limits, create_app
from pipeline.serving.batching import Batcher
from pipeline.serving.follower import Follower
from pipeline.serving.metrics import Metrics
from pipeline.tracking.models.classifier import load_keras


@dataclass
class Registry:
    uri: str
    networks: dict[str, Any]  # version -> the Keras network logged as it
    run_ids: dict[str, str]

    def client(self) -> MlflowClient:
        return MlflowClient(self.uri, registry_uri=self.uri)

    def promote(self, version: str) -> None:
        self.client().set_registered_model_alias("notmnist", "champion", version)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, _empty_store: Path) -> Registry:
    import os
    import shutil

    import keras
    from conftest import new_model

    from pipeline.tracking.models.classifier import log_keras_model

    folder = tmp_path_factory.mktemp("registry")
    shutil.copyfile(_empty_store, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # not one an earlier test in this worker left set
    client = MlflowClient(uri, registry_uri=uri)
    # its own experiment (and artifacts): never the fluent API's current one, which an earlier
    # test may have left pointing at another store's experiment
    experiment = client.create_experiment("serving", (folder / "artifacts").as_uri())
    networks, run_ids = {}, {}
    try:
        for seed in (1, 2):
            keras.utils.set_random_seed(seed)
            network = new_model(hidden_units=[8], dropout_rate=0.0)
            with mlflow.start_run(experiment_id=experiment) as run:
                model_uri = log_keras_model(network, np.zeros((2, 28, 28), dtype=np.uint8))
            version = str(mlflow.register_model(model_uri, "notmnist").version)
            networks[version], run_ids[version] = network, run.info.run_id
        client.create_model_version("notmnist", str(folder / "missing"), run_ids["1"])
        client.set_registered_model_alias("notmnist", "champion", "1")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        os.environ.pop("MLFLOW_REGISTRY_URI", None)  # which set_registry_uri set for children
    return Registry(uri, networks, run_ids)


@dataclass
class Served:
    follower: Follower
    batcher: Batcher
    metrics: Metrics
    app: Any


@pytest.fixture
def serving(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """The app on the registry's champion (version 1), not polled yet: nothing loaded."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.uri)
    registry.promote("1")
    metrics = Metrics(PATHS)
    follower = Follower(registry.client(), "notmnist", "champion", load_keras, metrics.swapped)
    batcher = Batcher(lambda: follower.current, 8, 256, metrics.batch)
    app = create_app(follower, batcher, metrics, Limits(max_images=64, max_body_bytes=400_000))
    logging.getLogger("pipeline.serving").setLevel(logging.INFO)
    try:
        yield Served(follower, batcher, metrics, app)
    finally:
        batcher.close()


def wait_until_healthy(
    url: str, proc: subprocess.Popen[Any], log: Path, timeout: float = 180
) -> None:
    """Until `<url>/health` answers 200 (a version is loaded); fails with the end of the
    server's `log` if it ends first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:  # not listening yet, or 503 (HTTPError is an OSError)
            pass
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
