"""Hyperparameter search: studies of pipeline runs under one parent, pruning, the report and
the exported experiment, several workers on PostgreSQL, and a killed worker's trial retried.

Every study here runs `python -m pipeline.search` in subprocesses, as a user would, on tiny
data with 2-3 epochs.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from conftest import CONF_DIR, TINY, assert_quiet, cli, wait_for_epoch, workdir
from mlflow.tracking import MlflowClient

from pipeline.jobs.search.storage import check_storage, journal_path
from pipeline.names import Tag

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
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 5-trial study of the pruning space (most learning rates too small to learn in
    3 epochs), its best 2 trials rerun with one more seed each, exported into a config folder
    of its own."""
    root = tmp_path_factory.mktemp("study")
    store_uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    before = set((CONF_DIR / "experiment").iterdir())
    args = (*STUDY, f"search.export={root / 'conf'}")
    result = cli("search", *args, env=_env(store_uri, root / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_quiet(result)
    assert set((CONF_DIR / "experiment").iterdir()) == before  # never into the package
    return {
        "store_uri": store_uri,
        "root": root,
        "output": result.stdout + result.stderr,
        "exported": (root / "conf" / "experiment" / "pruning_best.yaml").read_text(),
        "runs": _runs(store_uri),
        "study": _study(str(journal_path(store_uri, "pruning"))),
    }


STUDY = (
    *QUICK,
    "search=pruning",
    "search.n_trials=5",
    "search.rerun_top=2",
    "search.rerun_seeds=1",
)


def _ranked(tiny_study: dict[str, Any]) -> list[int]:
    """The study's finished trials as sweeps rank runs: the highest valid accuracy, ties
    (common on tiny valid sets) by the lower penalty-free valid loss."""
    _, children = _parent_and_children(tiny_study["runs"])
    finished = children[children["status"] == "FINISHED"]
    ranked = finished.sort_values(
        ["metrics.best_val_accuracy", "metrics.best_val_data_loss"], ascending=[False, True]
    )
    return [int(n) for n in ranked[f"tags.{Tag.SEARCH_TRIAL}"]]


def _study_runs(store_uri: str) -> pd.DataFrame:
    runs = _runs(store_uri)
    return runs[runs[f"tags.{Tag.SEARCH_STUDY}"] == "pruning"]


def test_study_is_one_parent_with_a_child_run_per_trial(tiny_study: dict[str, Any]) -> None:
    parent, children = _parent_and_children(tiny_study["runs"])
    study = tiny_study["study"]
    assert len(study.trials) == 5
    assert len(children) == 5
    assert sorted(children[f"tags.{Tag.SEARCH_TRIAL}"].astype(int)) == [0, 1, 2, 3, 4]
    assert parent["status"] == "FINISHED"
    assert parent[f"tags.{Tag.KIND}"] == "search"
    assert set(children[f"tags.{Tag.KIND}"]) == {"trial"}
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
    assert {"search/trials.csv", "search/best_experiment.yaml", "search/seeds.md"} <= search
    assert "search/started_with.json" in search
    comparison = {a.path for a in client.list_artifacts(parent["run_id"], "comparison")}
    assert {"comparison/comparison.csv", "comparison/report.md"} <= comparison
    assert int(parent[f"tags.{Tag.SEARCH}.best_trial"]) in _ranked(tiny_study)[:2]
    logged = client.download_artifacts(parent["run_id"], "search/best_experiment.yaml")
    assert Path(logged).read_text() == tiny_study["exported"]


def test_best_trials_rerun_over_seeds_and_the_best_mean_is_exported(
    tiny_study: dict[str, Any],
) -> None:
    """The 2 best trials train again with train.seed + 1, nested under their own runs; the
    exported trial is the one whose mean valid accuracy over both seeds is the highest."""
    runs = tiny_study["runs"]
    parent, children = _parent_and_children(runs)
    reruns = runs[runs[f"tags.{Tag.SEARCH_RERUN_OF}"].notna()]
    top = _ranked(tiny_study)[:2]
    assert sorted(reruns[f"tags.{Tag.SEARCH_RERUN_OF}"].astype(int)) == sorted(top)
    assert set(reruns["status"]) == {"FINISHED"}
    assert set(reruns[f"tags.{Tag.SEARCH_SEED}"]) == {"43"}  # train.seed 42 + 1
    by_trial = children.set_index(f"tags.{Tag.SEARCH_TRIAL}")
    means = {}
    for number in top:
        own = by_trial.loc[str(number)]
        again = reruns[reruns[f"tags.{Tag.SEARCH_RERUN_OF}"] == str(number)].iloc[0]
        assert again[f"tags.{Tag.PARENT_RUN_ID}"] == own["run_id"]
        pair = [own["metrics.best_val_accuracy"], again["metrics.best_val_accuracy"]]
        data_loss = [own["metrics.best_val_data_loss"], again["metrics.best_val_data_loss"]]
        means[number] = (-sum(pair) / 2, sum(data_loss) / 2)
    best = min(means, key=lambda n: means[n])
    assert parent[f"tags.{Tag.SEARCH}.best_trial"] == str(best)
    assert parent[f"tags.{Tag.SEARCH}.best_run_id"] == by_trial.loc[str(best), "run_id"]
    assert parent["metrics.seeds.best_val_accuracy.mean"] == pytest.approx(-means[best][0])
    client = MlflowClient(tiny_study["store_uri"])
    table = Path(client.download_artifacts(parent["run_id"], "search/seeds.md")).read_text()
    assert f"| {best} | " in table
    assert "± " in table


def _printed_command(output: str) -> list[str]:
    """The command the search printed to run its exported best, as argv."""
    line = next(x for x in output.splitlines() if "Run it: " in x)
    return shlex.split(line.split("Run it: ", 1)[1])


def test_export_goes_where_the_user_says(tiny_study: dict[str, Any]) -> None:
    args = _printed_command(tiny_study["output"])
    folder = tiny_study["root"] / "conf"
    assert args[:5] == ["notmnist", "train", "--config-dir", str(folder), "experiment=pruning_best"]
    assert args[5:] == [o for o in TINY if o.startswith("data.")]  # the study's own data
    assert f"# Run it: {shlex.join(args)}" in tiny_study["exported"]


def test_the_printed_command_reproduces_the_exported_trial(tiny_study: dict[str, Any]) -> None:
    """The printed command, as written (from another folder), trains the exported trial's
    config on the study's data: the same metrics to the digit."""
    runs = tiny_study["runs"]
    parent, _ = _parent_and_children(runs)
    trial_run = runs[runs["run_id"] == parent[f"tags.{Tag.SEARCH}.best_run_id"]].iloc[0]
    args = _printed_command(tiny_study["output"])
    assert args[0] == "notmnist"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *args[1:]],
        cwd=tiny_study["root"],
        env=_env(tiny_study["store_uri"], tiny_study["root"] / "cache"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    again = _runs(tiny_study["store_uri"])
    rerun = again[again["experiment_id"] != trial_run["experiment_id"]]
    assert len(rerun) == 1
    for metric in ("best_val_accuracy", "best_val_loss", "test_accuracy", "test_loss"):
        assert rerun.iloc[0][f"metrics.{metric}"] == trial_run[f"metrics.{metric}"], metric


def test_a_finished_study_says_so(tiny_study: dict[str, Any]) -> None:
    """The same command again runs nothing and says what the study holds and where its report
    is (it said `This worker ran 0 trials`)."""
    env = _env(tiny_study["store_uri"], tiny_study["root"] / "cache")
    before = _study_runs(tiny_study["store_uri"])
    result = cli("search", *STUDY, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    parent, _ = _parent_and_children(tiny_study["runs"])
    output = result.stdout + result.stderr
    said = next(x for x in output.splitlines() if "is finished" in x)
    assert "Study 'pruning' is finished: 5 trials (" in said
    assert "for search.n_trials=5" in said
    assert parent["run_id"] in said
    assert "ran 0 trials" not in output
    after = _study_runs(tiny_study["store_uri"])
    assert sorted(after["run_id"]) == sorted(before["run_id"])
    assert set(after.loc[after["run_id"] == parent["run_id"], "status"]) == {"FINISHED"}


def test_a_worker_with_other_data_or_settings_is_refused(tiny_study: dict[str, Any]) -> None:
    """Other data (another split seed: other images) and another epoch budget: one line
    naming the study, each difference and the study to start instead; no trial, no run."""
    env = _env(tiny_study["store_uri"], tiny_study["root"] / "cache")
    before = _study_runs(tiny_study["store_uri"])
    result = cli("search", *STUDY, "data.seed=1", "train.epochs=2", env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("config error: study 'pruning' was started with other settings: ")
    digest = _study(str(journal_path(tiny_study["store_uri"], "pruning"))).user_attrs[
        "started_with"
    ]["data.digest"]
    assert f"data.digest {digest[:12]} -> " in line
    assert "data.seed 0 -> 1, train.epochs 3 -> 2." in line
    assert "(search.study=pruning-" in line
    assert len(_study(str(journal_path(tiny_study["store_uri"], "pruning"))).trials) == 5
    assert sorted(_study_runs(tiny_study["store_uri"])["run_id"]) == sorted(before["run_id"])


def test_report_on_demand(tiny_study: dict[str, Any]) -> None:
    """`notmnist search report` logs the report again (training nothing: the reruns are
    found); an unknown study is an error of one line, not a new empty study."""
    env = _env(tiny_study["store_uri"], tiny_study["root"] / "cache")
    before = _study_runs(tiny_study["store_uri"])
    again = cli(
        "search", "report", "search=pruning", "search.rerun_top=2", "search.rerun_seeds=1", env=env
    )
    assert again.returncode == 0, again.stderr[-3000:]
    parent, _ = _parent_and_children(_runs(tiny_study["store_uri"]))
    assert parent["status"] == "FINISHED"
    assert (
        parent[f"tags.{Tag.SEARCH}.best_trial"]
        == (
            tiny_study["runs"]
            .loc[tiny_study["runs"]["run_id"] == parent["run_id"]]
            .iloc[0][f"tags.{Tag.SEARCH}.best_trial"]
        )
    )
    assert len(_study_runs(tiny_study["store_uri"])) == len(before)
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
        "search.rerun_top=0",
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
    study += ("search.rerun_top=0",)
    beats = ("search.heartbeat_seconds=1", "search.grace_seconds=3")
    # the same settings for both workers (a study refuses others): long enough to be killed
    # in, short enough to run again
    long = (*QUICK, "train.epochs=30", "train.early_stopping.enabled=false")
    endless = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "search", *long, *study, *beats],
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
    result = cli("search", *long, *study, *beats, env=env)
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
