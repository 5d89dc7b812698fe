"""KERAS_BACKEND=jax, the faster optional backend: same pipeline, same guarantees."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import TINY, cli, settings
from mlflow.tracking import MlflowClient

from pipeline.jobs.training import load_data
from pipeline.names import Tag

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("jax") is None, reason="JAX not installed (pip install '.[jax]')"
    ),
]


def test_jax_runs_are_tracked_deterministic_and_portable(store_uri: str, tmp_path: Path) -> None:
    # the same config twice, in one process (a sweep of two jobs: one start-up, not two)
    result = cli(
        "-m",
        *TINY,
        "tracking.experiment=jax",
        "tracking.run_name=first,second",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store_uri)
    found = client.search_runs([client.get_experiment_by_name("jax").experiment_id])
    runs = [r for r in found if r.data.tags.get(Tag.SWEEP) != "true"]  # not the parent
    assert len(runs) == 2
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["keras.backend"] for r in runs} == {"jax"}
    first, second = (
        {k: v for k, v in r.data.metrics.items() if not k.startswith(("seconds.", "epoch_"))}
        for r in runs
    )
    assert first == second  # same config, same numbers, to the last digit
    # the model trained under JAX loads and predicts in this (TensorFlow) process
    mlflow.set_tracking_uri(store_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{runs[0].info.run_id}/model")
    test = load_data(settings(*TINY).data).test
    accuracy = float((np.asarray(model.predict(test.images)).argmax(axis=1) == test.labels).mean())
    assert accuracy == pytest.approx(first["test_accuracy"], abs=1e-6)


def test_tensorflow_runs_do_not_import_jax_but_can() -> None:
    """The start-up saving: JAX is hidden from TensorFlow's import only, not from later code."""
    check = (
        "import sys, pipeline.process as p; p.configure(); p.import_tensorflow_without_jax(); "
        "import pipeline.jobs.training; assert 'jax' not in sys.modules, 'jax imported'; "
        "import jax.numpy as jnp; print(int(jnp.ones(3).sum()))"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run(
        [sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "3"
