"""Runs started together on a brand-new store: its schema is made once, under the store's
lock, and no run is lost (SQLite and PostgreSQL, whole runs and bare tracked runs)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, TINY
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

# A tracked run without TensorFlow: what every writer does first (connect, open a run, log).
_BARE_RUN = """
import sys, time
from pipeline.tracking.runs.lifecycle import open_run
from pipeline.tracking.store.connect import connect
uri, start_at = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))  # all processes reach the store at once
store = connect(uri, "together")
with open_run(store, "bare") as run:
    run.client.log_metric(run.run_id, "x", 1.0)
"""


def _start_together(commands: list[list[str]], uri: str) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(PROJECT_ROOT)}
    return [
        subprocess.Popen(
            c, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for c in commands
    ]


def _all_succeed(procs: list[subprocess.Popen[str]], uri: str, experiment: str) -> None:
    """0 lost: every process exits 0 and every run it made is FINISHED."""
    errors = []
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            errors.append(err[-1500:])
        # connections closed cleanly at exit: no psycopg "error ignored terminating ..."
        assert "error ignored" not in err, err[-1500:]
    assert not errors, f"{len(errors)} of {len(procs)} failed:\n" + "\n---\n".join(errors)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == len(procs)
    assert {r.info.status for r in runs} == {"FINISHED"}


def _bare_runs(uri: str, n: int) -> None:
    start_at = str(time.time() + 10 + n)  # after every process has imported MLflow
    procs = _start_together([[sys.executable, "-c", _BARE_RUN, uri, start_at]] * n, uri)
    _all_succeed(procs, uri, "together")


# Another MLflow client (a notebook, `mlflow ui`), which takes no lock of ours, opening the same
# brand-new store at the same moment: MLflow's own creation of the schema races ours.
_PLAIN_CLIENT = """
import sys, time
from mlflow.tracking import MlflowClient
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    MlflowClient(sys.argv[1]).search_experiments()
except Exception as exc:  # its own loss of the race is MLflow's, not ours to test
    print(f"plain client: {type(exc).__name__}", file=sys.stderr)
"""


def _full_runs(uri: str, n: int, tmp_path: Path) -> None:
    run = [sys.executable, "-m", "pipeline", *TINY, "train.epochs=1", "tracking.log_model=false"]
    procs = _start_together(
        [
            [*run, "tracking.experiment=full", f"hydra.run.dir={tmp_path / str(i)}"]
            for i in range(n)
        ],
        uri,
    )
    _all_succeed(procs, uri, "full")


def test_eight_first_runs_on_a_new_sqlite_store(tmp_path: Path) -> None:
    _bare_runs(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}", 8)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_runs_beside_other_clients_opening_a_new_store(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """3 runs and 3 plain MlflowClients open a brand-new store at once: a run that loses the
    race for the schema waits for it and goes on (before: 3 of 6 runs failed with `table
    entity_associations already exists`)."""
    if database == "sqlite":
        uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
        (tmp_path / "new").mkdir()
    else:
        uri = request.getfixturevalue("postgres_db")
    start_at = str(time.time() + 12)
    commands = [[sys.executable, "-c", _BARE_RUN, uri, start_at]] * 3
    commands += [[sys.executable, "-c", _PLAIN_CLIENT, uri, start_at]]
    procs = _start_together(commands, uri)
    for plain in procs[3:]:
        plain.communicate(timeout=600)
    _all_succeed(procs[:3], uri, "together")


def test_four_first_full_runs_on_a_new_sqlite_store(tmp_path: Path) -> None:
    _full_runs(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}", 4, tmp_path)


def test_eight_first_runs_on_a_new_postgres_database(postgres_db: str) -> None:
    _bare_runs(postgres_db, 8)


def test_four_first_full_runs_on_a_new_postgres_database(
    postgres_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_HOME", str(tmp_path))  # its artifacts: <home>/mlruns/artifacts
    _full_runs(postgres_db, 4, tmp_path)
    client = MlflowClient(postgres_db)
    experiment = client.get_experiment_by_name("full")
    assert experiment.artifact_location == (tmp_path / "mlruns" / "artifacts").as_uri()


def test_parallel_sweep_on_a_new_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    sweep = [
        sys.executable,
        "-m",
        "pipeline",
        "-m",
        "hydra/launcher=parallel",
        *TINY,
        "train.epochs=1",
        "tracking.log_model=false",
        "model.dropout_rate=0,0.5",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    [proc] = _start_together([sweep], uri)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("notmnist").experiment_id])
    assert len(runs) == 3  # the parent and its two jobs
    assert {r.info.status for r in runs} == {"FINISHED"}
