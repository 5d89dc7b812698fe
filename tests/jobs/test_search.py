"""Hyperparameter search: studies of pipeline runs under one parent, pruning, the report and
the exported experiment, several workers on PostgreSQL, and a killed worker's trial retried.

Every study here runs `python -m pipeline.search` in subprocesses, as a user would, on tiny
data with 2-3 epochs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from conftest import CONF_DIR, ENDLESS, TINY, assert_quiet, cli, wait_for_epoch, workdir
from mlflow.tracking import MlflowClient

from pipeline.jobs.search import _best_trial, check_storage, journal_path
from pipeline.names import Tag
from pipeline.reporting.comparison import compare

pytestmark = pytest.mark.slow

QUICK = (*TINY, "tracking.log_model=false")


def _env(store_uri: str, cache: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "PIPELINE_CACHE_DIR": str(cache)}


def _runs(store_uri: str) -> pd.DataFrame:
    """Every run of the store, with its tags and metrics (`mlflow.search_runs` columns)."""
    import mlflow

    client = MlflowClient(store_uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    mlflow.set_tracking_uri(store_uri)
    return mlflow.search_runs(ids, max_results=1000)


def _parent_and_children(runs: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    parents = runs[runs.get(f"tags.{Tag.SEARCH}") == "true"]
    assert len(parents) == 1, parents
    parent = parents.iloc[0]
    children = runs[runs[f"tags.{Tag.PARENT_RUN_ID}"] == parent["run_id"]]
    return parent, children


def _study(search: str, storage: str | None = None) -> optuna.Study:
    if storage is None:
        backend = optuna.storages.journal.JournalFileBackend(search)
        return optuna.load_study(study_name=None, storage=optuna.storages.JournalStorage(backend))
    url = storage.replace("postgresql://", "postgresql+psycopg://", 1)
    return optuna.load_study(study_name=None, storage=url)


# --- one tiny study on the embedded (journal) storage, shared by the tests below ------------


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A 5-trial study of the pruning space (most learning rates too small to learn in
    3 epochs), exported as an experiment of its own."""
    root = tmp_path_factory.mktemp("study")
    store_uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    export = f"test_searched_{uuid.uuid4().hex[:8]}"
    args = (*QUICK, "search=pruning", "search.n_trials=5", f"search.export={export}")
    result = cli("search", *args, env=_env(store_uri, root / "cache"))
    exported = CONF_DIR / "experiment" / f"{export}.yaml"
    try:
        assert result.returncode == 0, result.stderr[-3000:]
        assert_quiet(result)
        yield {
            "store_uri": store_uri,
            "root": root,
            "export": export,
            "exported": exported.read_text(),
            "runs": _runs(store_uri),
            "study": _study(str(journal_path(store_uri, "pruning"))),
        }
    finally:
        exported.unlink(missing_ok=True)


def _best_number(tiny_study: dict[str, Any]) -> int:
    """The best trial as sweeps rank runs: the highest valid accuracy, ties (common on tiny
    valid sets) by the lower penalty-free valid loss."""
    finished = tiny_study["runs"][tiny_study["runs"]["status"] == "FINISHED"]
    ranked = finished.sort_values(
        ["metrics.best_val_accuracy", "metrics.best_val_data_loss"], ascending=[False, True]
    )
    return int(ranked.iloc[0][f"tags.{Tag.SEARCH_TRIAL}"])


def test_study_is_one_parent_with_a_child_run_per_trial(tiny_study: dict[str, Any]) -> None:
    parent, children = _parent_and_children(tiny_study["runs"])
    study = tiny_study["study"]
    assert len(study.trials) == 5
    assert len(children) == 5
    assert sorted(children[f"tags.{Tag.SEARCH_TRIAL}"].astype(int)) == [0, 1, 2, 3, 4]
    assert parent["status"] == "FINISHED"
    assert set(children["status"]) <= {"FINISHED", "KILLED"}  # never FAILED or RUNNING
    finished = children[children["status"] == "FINISHED"]
    complete = {t.number: t.value for t in study.trials if t.state.name == "COMPLETE"}
    assert len(finished) == len(complete) >= 1
    for _, run in finished.iterrows():  # Optuna's value is the run's best_val_accuracy
        number = int(run[f"tags.{Tag.SEARCH_TRIAL}"])
        assert complete[number] == pytest.approx(run["metrics.best_val_accuracy"])
        assert run["metrics.seconds.trial"] > run["metrics.seconds.train"]


def test_pruned_trials_end_killed_with_a_tag(tiny_study: dict[str, Any]) -> None:
    """The pruning space is made for it: most learning rates learn nothing in 3 epochs."""
    _, children = _parent_and_children(tiny_study["runs"])
    pruned = [t.number for t in tiny_study["study"].trials if t.state.name == "PRUNED"]
    assert pruned, "no trial was pruned"
    killed = children[children["status"] == "KILLED"]
    assert sorted(killed[f"tags.{Tag.SEARCH_TRIAL}"].astype(int)) == pruned
    assert set(killed[f"tags.{Tag.PRUNED}"]) == {"true"}


def test_report_on_the_parent(tiny_study: dict[str, Any]) -> None:
    parent, _ = _parent_and_children(tiny_study["runs"])
    client = MlflowClient(tiny_study["store_uri"])
    search = {a.path for a in client.list_artifacts(parent["run_id"], "search")}
    figures = ("optimization_history", "param_importances", "parallel_coordinate", "slice")
    assert {f"search/{name}.png" for name in figures} <= search
    assert {"search/trials.csv", "search/best_experiment.yaml"} <= search
    comparison = {a.path for a in client.list_artifacts(parent["run_id"], "comparison")}
    assert {"comparison/comparison.csv", "comparison/report.md"} <= comparison
    assert parent[f"tags.{Tag.SEARCH}.best_trial"] == str(_best_number(tiny_study))
    logged = client.download_artifacts(parent["run_id"], "search/best_experiment.yaml")
    assert Path(logged).read_text() == tiny_study["exported"]


def test_exported_experiment_reproduces_the_best_trial(tiny_study: dict[str, Any]) -> None:
    """`experiment=<exported>` with only the data overrides: the same metrics to the digit."""
    runs = tiny_study["runs"]
    trial_run = runs[runs[f"tags.{Tag.SEARCH_TRIAL}"] == str(_best_number(tiny_study))].iloc[0]
    data = [o for o in TINY if o.startswith("data.")]
    result = cli(
        f"experiment={tiny_study['export']}",
        *data,
        "tracking.log_model=false",
        env=_env(tiny_study["store_uri"], tiny_study["root"] / "cache"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    again = _runs(tiny_study["store_uri"])
    rerun = again[again["experiment_id"] != trial_run["experiment_id"]]
    assert len(rerun) == 1
    for metric in ("best_val_accuracy", "best_val_loss", "test_accuracy", "test_loss"):
        assert rerun.iloc[0][f"metrics.{metric}"] == trial_run[f"metrics.{metric}"], metric


def test_report_on_demand(tiny_study: dict[str, Any]) -> None:
    """`python -m pipeline.search report` logs the report again; an unknown study is an error
    of one line, not a new empty study."""
    env = _env(tiny_study["store_uri"], tiny_study["root"] / "cache")
    again = cli("search", "report", "search=pruning", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    parent, _ = _parent_and_children(_runs(tiny_study["store_uri"]))
    assert parent["status"] == "FINISHED"
    unknown = cli("search", "report", "search=pruning", "search.study=nope", env=env)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines()[-1] == (
        f"config error: search.study=nope: no such study in journal "
        f"{journal_path(tiny_study['store_uri'], 'nope')}"
    )


# --- workers --------------------------------------------------------------------------------


def test_two_workers_on_postgres(postgres_db: str, store_uri: str, tmp_path: Path) -> None:
    """Two local workers on a study in its own PostgreSQL database (MLflow stays on SQLite):
    the budget holds, one parent, every trial complete and in MLflow."""
    args = (
        *QUICK,
        "train.epochs=2",
        "search=default",
        "search.study=pg",
        "search.n_trials=4",
        "search.workers=2",
        "search.pruner=none",
        f"search.storage={postgres_db}",
    )
    result = cli("search", *args, env=_env(store_uri, tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    study = _study("pg", postgres_db)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    parent, children = _parent_and_children(_runs(store_uri))
    assert parent["status"] == "FINISHED"
    assert sorted(children[f"tags.{Tag.SEARCH_TRIAL}"].astype(int)) == [0, 1, 2, 3]
    assert set(children["status"]) == {"FINISHED"}
    assert study.user_attrs["mlflow_parent_run_id"] == parent["run_id"]


def test_storage_is_never_the_mlflow_database() -> None:
    uri = "postgresql://u@db:5432/mlflow"
    with pytest.raises(ValueError, match="is the MLflow store's database"):
        check_storage("postgresql+psycopg://u@db:5432/mlflow", uri)
    check_storage("postgresql://u@db:5432/optuna", uri)


def test_killed_worker_trial_is_retried(store_uri: str, tmp_path: Path) -> None:
    """SIGKILL a worker in the middle of its trial: the next worker finds the trial's heartbeat
    stale, marks it failed (and its MLflow run FAILED) and runs it again."""
    env = _env(store_uri, tmp_path / "cache")
    study = ("search=pruning", "search.study=kill", "search.n_trials=1", "search.pruner=none")
    beats = ("search.heartbeat_seconds=1", "search.grace_seconds=3")
    endless = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "search", *ENDLESS, *study, *beats],
        cwd=workdir(),  # its workers' outputs/ in the test's folder
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        dead_run = wait_for_epoch(store_uri, endless)
    finally:  # the worker and its run recorder at once, as a lost machine: nothing ends the run
        os.killpg(endless.pid, signal.SIGKILL)
        endless.communicate()
    result = cli("search", *QUICK, "train.epochs=2", *study, *beats, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    trials = _study(str(journal_path(store_uri, "kill"))).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"]
    assert trials[1].system_attrs["failed_trial"] == 0
    parent, children = _parent_and_children(_runs(store_uri))
    assert parent["status"] == "FINISHED"
    by_trial = children.set_index(f"tags.{Tag.SEARCH_TRIAL}")
    assert by_trial.loc["0", "run_id"] == dead_run
    assert by_trial.loc["0", "status"] == "FAILED"
    assert "worker died" in by_trial.loc["0", f"tags.{Tag.ERROR}"]
    assert by_trial.loc["1", "status"] == "FINISHED"


def test_a_tie_in_valid_accuracy_goes_to_the_run_the_comparison_ranks_first() -> None:
    """Optuna's `best_trial` breaks ties by trial number; the exported config must be the
    report's best run (ties broken by the lower penalty-free valid loss), as in a real study
    where trials 13, 30 and 46 all reached 0.9301."""
    study = optuna.create_study(direction="maximize")
    for value in (0.93, 0.93, 0.91):
        study.add_trial(optuna.trial.create_trial(value=value))
    runs = pd.DataFrame(
        {
            "run_id": ["r0", "r1", "r2"],
            "status": ["FINISHED"] * 3,
            f"tags.{Tag.SEARCH_TRIAL}": ["0", "1", "2"],
            "metrics.best_val_accuracy": [0.93, 0.93, 0.91],
            "metrics.best_val_data_loss": [0.32, 0.30, 0.25],
            "metrics.test_accuracy": [0.90, 0.91, 0.89],
        }
    )
    assert study.best_trial.number == 0
    assert _best_trial(study, runs, compare(runs).best).number == 1
    assert _best_trial(study, runs, None).number == 0  # no runs to rank: Optuna's
