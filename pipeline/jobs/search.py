"""A hyperparameter search: an Optuna study whose trials are ordinary pipeline runs.

Every trial is `pipeline.jobs.training.run` with the trial's values set on the typed config,
a child MLflow run under the study's one parent run. Any number of workers (local processes,
other machines) work on one study through its storage; each worker decodes the data once and
takes trials until the study's budget is spent:

- the study's parent run is made once, under a lock, and its id kept in the study's user
  attributes, where later workers find it;
- a worker takes a trial under the study's lock after counting the trials so far, so the
  budget holds across workers;
- a running trial's worker records a heartbeat; a trial silent for `grace_seconds` (its
  worker died) is failed, its MLflow run marked FAILED, and retried by a live worker;
- per epoch, the trial reports its valid accuracy (comparable across L2 strengths, unlike
  Keras' `val_loss`) to the pruner; a pruned trial's run ends KILLED with `pruned=true`;
- the worker that finds the study finished logs the report onto the parent run: Optuna's
  figures, the sweeps' comparison, the trials and the best trial as a ready experiment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import optuna
import yaml
from mlflow.tracking import MlflowClient
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from pipeline.config import (
    AppConfig,
    SearchConfig,
    TrackingConfig,
    config_dir,
    validate,
    with_settings,
)
from pipeline.config.schema import ParamSpec
from pipeline.errors import ConfigError, RunsFailedError
from pipeline.jobs import training
from pipeline.names import Artifact, Kind, Metric, Tag
from pipeline.stages.data import Dataset
from pipeline.tracking.recording import recorder
from pipeline.tracking.runs.lifecycle import EndRun, git_tags
from pipeline.tracking.runs.processes import process_tags
from pipeline.tracking.store.connect import Store, open_store
from pipeline.tracking.store.locks import store_lock

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"  # study user attribute: the parent run's id
RUN_ID = re.compile(r"[0-9a-f]{32}")
HEARTBEAT_ATTR = "heartbeat"  # trial system attribute (journal storage): last sign of life
RETRIES_ATTR = "retry_history"  # set by Optuna's retry callback on a retried trial
OBJECTIVE = Metric.BEST_VAL_ACCURACY  # maximised; per epoch, `val_accuracy` goes to the pruner
FIGURES = ("optimization_history", "param_importances", "parallel_coordinate", "slice")


class Pruned(EndRun, optuna.TrialPruned):
    """The pruner stopped this trial: its MLflow run ends KILLED with `pruned=true`, and
    Optuna records the trial as PRUNED."""


# --- storage -------------------------------------------------------------------------------


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal file storage with the heartbeats that Optuna gives only its RDB
    storage: the heartbeat is a trial system attribute (seconds since the epoch), so a trial
    whose worker died is found and retried as on PostgreSQL."""

    def __init__(
        self,
        path: Path,
        heartbeat_interval: int,
        grace_period: int,
        stale_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_callback = stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [
            t._trial_id
            for t in running
            if now - float(t.system_attrs.get(HEARTBEAT_ATTR, now)) > self.grace_period
        ]

    def get_heartbeat_interval(self) -> int:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.stale_callback


def journal_path(store_uri: str, study: str) -> Path:
    """The default storage: `<folder of the MLflow SQLite store>/optuna/<study>.journal`
    (mlruns/optuna/ by default), else under the project home's mlruns/optuna/."""
    from pipeline.config import project_home

    if store_uri.startswith("sqlite:///"):
        folder = Path(store_uri.removeprefix("sqlite:///")).parent
    else:
        folder = project_home() / "mlruns"
    return folder / "optuna" / f"{study}.journal"


def _sqlalchemy_url(uri: str) -> str:
    """`postgresql://` means psycopg 3 (installed with the postgres extra), not psycopg2."""
    scheme, sep, rest = uri.partition("://")
    return f"postgresql+psycopg{sep}{rest}" if scheme in ("postgresql", "postgres") else uri


def _same_database(a: str, b: str) -> bool:
    def plain(uri: str) -> str:
        scheme, sep, rest = uri.partition("://")
        return f"{scheme.split('+', 1)[0].replace('postgres', 'postgresql', 1)}{sep}{rest}"

    return plain(a).rstrip("/").split("?")[0] == plain(b).rstrip("/").split("?")[0]


def check_storage(storage: str | None, store_uri: str) -> None:
    """Refuse a study storage that is the MLflow store's own database: both keep their schema
    version in an `alembic_version` table, and their migrations would collide."""
    if storage is None:
        return
    if not storage.startswith(("postgresql", "postgres://", "mysql", "sqlite:///")):
        raise ConfigError(
            f"search.storage={storage}: give null (a journal file under mlruns/) or a "
            "database URI such as postgresql://user@host/optuna"
        )
    if _same_database(storage, store_uri):
        raise ConfigError(
            f"search.storage={storage} is the MLflow store's database: give the study a "
            "database of its own (their schema migrations collide)"
        )


def open_storage(search: SearchConfig, store: Store) -> tuple[BaseStorage, str]:
    """The study's storage and the URI of the lock that serialises its workers."""
    retry = _retry_and_close_run(store, search.max_retry, search.grace_seconds)
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if search.storage is None:
            path = journal_path(store.uri, search.study)
            storage: BaseStorage = HeartbeatJournalStorage(
                path, search.heartbeat_seconds, search.grace_seconds, retry
            )
            return storage, f"file://{path}"
        storage = RDBStorage(
            _sqlalchemy_url(search.storage),
            heartbeat_interval=search.heartbeat_seconds,
            grace_period=search.grace_seconds,
            heartbeat_stale_trial_callback=retry,
        )
        return storage, search.storage


def _retry_and_close_run(
    store: Store, max_retry: int, grace: int
) -> Callable[[optuna.Study, FrozenTrial], None]:
    """For a trial whose worker died: queue it again (Optuna's retry), and end its MLflow run
    FAILED, which no one else would (a SIGKILLed process ends nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        retry(study, trial)
        client = MlflowClient(store.uri)
        orphans = client.search_runs(
            [store.experiment_id],
            f"tags.`{Tag.SEARCH_STUDY}` = '{study.study_name}' "
            f"and tags.`{Tag.SEARCH_TRIAL}` = '{trial.number}' and attributes.status = 'RUNNING'",
        )
        for run in orphans:
            message = f"its worker died: no heartbeat for {grace} s; the trial is retried"
            client.set_tag(run.info.run_id, Tag.ERROR, message)
            client.set_terminated(run.info.run_id, "FAILED")
        log.warning("Trial %d lost its worker: marked failed and queued again", trial.number)

    return callback


# --- one study -----------------------------------------------------------------------------


@dataclass
class Study:
    """A study joined by this worker: Optuna's handle, where its runs go, its lock."""

    optuna: optuna.Study
    store: Store
    parent_run_id: str
    lock_uri: str
    search: SearchConfig
    tracking: TrackingConfig  # the worker's own settings, for what it reads back

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The study's lock: one worker at a time counts trials and takes one, or reports."""
        with store_lock(self.store.uri, f"study-{self.search.study}", -1, self.lock_uri):
            yield


def join(search: SearchConfig, cfg: AppConfig, space: str = "") -> Study:
    """Create or load the study and its one parent run (made by whichever worker comes first)."""
    tracking = cfg.tracking
    store = open_store(tracking)
    check_storage(search.storage, store.uri)
    storage, lock_uri = open_storage(search, store)
    sampler = _sampler(search.sampler_seed, 0)
    pruner = _pruner(search, cfg.train.epochs)
    with store_lock(store.uri, f"study-{search.study}", -1, lock_uri):
        if search.report_only and search.study not in optuna.get_all_study_names(storage):
            raise ConfigError(
                f"search.study={search.study}: no such study in "
                f"{_storage_label(search.storage, lock_uri)}"
            )
        study = optuna.create_study(
            storage=storage,
            study_name=search.study,
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
        client = MlflowClient(store.uri)
        parent = study.user_attrs.get(PARENT_ATTR)
        if parent is None:
            run = client.create_run(
                store.experiment_id,
                run_name=f"study {search.study}",
                tags={
                    **git_tags(),
                    **process_tags(),  # the worker that made it (a later one takes over)
                    Tag.SWEEP: "true",  # a parent: `pipeline.report --experiment` skips it
                    Tag.SEARCH: "true",
                    Tag.KIND: Kind.SEARCH,
                    Tag.SEARCH_STUDY: search.study,
                    Tag.SEARCH_STORAGE: _storage_label(search.storage, lock_uri),
                    Tag.SWEEP_OVERRIDES: space,
                },
            )
            parent = run.info.run_id
            settings = yaml.safe_dump(search.model_dump(mode="json"), sort_keys=False)
            client.log_text(parent, settings, f"{Artifact.SEARCH_DIR}/search.yaml")
            study.set_user_attr(PARENT_ATTR, parent)
            log.info("Study '%s': parent run %s", search.study, parent)
        elif not RUN_ID.fullmatch(str(parent)):  # a study attribute: anyone may have set it
            raise ConfigError(f"study {search.study}: its parent run id {parent!r} is not one")
        elif not search.report_only:
            # the study goes on, in this worker: `stale-runs` looks at it from now on
            for key, value in process_tags().items():
                client.set_tag(str(parent), key, value)
            if client.get_run(str(parent)).info.status != "RUNNING":
                client.update_run(str(parent), status="RUNNING")
    return Study(study, store, str(parent), lock_uri, search, tracking)


def _storage_label(storage: str | None, lock_uri: str) -> str:
    if storage is None:
        return f"journal {lock_uri.removeprefix('file://')}"
    scheme, _, rest = storage.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"  # no password in a tag


def _sampler(seed: int | None, trial_number: int) -> optuna.samplers.BaseSampler:
    """TPE, seeded per trial: workers that start together would otherwise draw the same
    values, while one worker stays repeatable. `constant_liar` keeps parallel workers from
    crowding where others' trials still run."""
    return optuna.samplers.TPESampler(
        seed=None if seed is None else seed * 100_003 + trial_number, constant_liar=True
    )


def _pruner(search: SearchConfig, epochs: int) -> optuna.pruners.BasePruner:
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=search.startup_trials, n_warmup_steps=search.warmup_epochs
        )
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, search.warmup_epochs), max_resource=epochs
        )
    return optuna.pruners.NopPruner()


# --- trials --------------------------------------------------------------------------------


def suggest(trial: optuna.Trial, key: str, spec: ParamSpec) -> Any:
    """Draw one setting. Choices that Optuna cannot store (lists) go through as JSON text."""
    if spec.kind == "categorical":
        assert spec.choices is not None
        labels = [c if _scalar(c) else json.dumps(c) for c in spec.choices]
        label = trial.suggest_categorical(key, labels)
        return spec.choices[labels.index(label)]
    assert spec.low is not None
    assert spec.high is not None
    log_scale = spec.kind.startswith("log")
    if spec.kind.endswith("int"):
        step = int(spec.step or 1)
        return trial.suggest_int(key, int(spec.low), int(spec.high), step=step, log=log_scale)
    return trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=log_scale)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


class ReportToTrial(keras.callbacks.Callback):
    """Each epoch's valid accuracy to the trial, and a stop when the pruner says so."""

    def __init__(self, trial: optuna.Trial) -> None:
        super().__init__()
        self.trial = trial

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = float((logs or {})[Metric.VAL_ACCURACY])
        self.trial.report(value, epoch + 1)
        if self.trial.should_prune():
            raise Pruned(
                f"pruned after epoch {epoch + 1}: valid accuracy {value:.4f}",
                tags={Tag.PRUNED: "true", f"{Tag.PRUNED}.epoch": str(epoch + 1)},
            )


class Heartbeat:
    """While a trial runs: a thread that records its heartbeat every interval."""

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        assert isinstance(self.storage, BaseHeartbeat)
        interval = self.storage.get_heartbeat_interval()
        assert interval is not None
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a missed beat is not worth a trial; the next one may pass
                log.debug("heartbeat failed", exc_info=True)
            if self.stop.wait(interval):
                return

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use the budget: all but failed ones that were queued again (their
    retry counts instead), so a dead worker's trial is neither lost nor paid twice."""
    retried = {n for t in trials for n in t.system_attrs.get(RETRIES_ATTR, ())}
    return [t for t in trials if t.number not in retried]


def work(
    study: Study,
    cfg: AppConfig,
    overrides: Sequence[str] = (),
    threads: int | None = None,
    dataset: Dataset | None = None,
    poll_seconds: float = 2.0,
) -> int:
    """Take trials until the study's budget is spent and no trial is left running; then,
    if this worker is the last one, log the study's report. Returns the trials it ran."""
    ran = 0
    while True:
        begin = time.perf_counter()
        with study.locked():
            trial = _next_trial(study)
        if trial is None:
            if _finished(study):
                break
            time.sleep(poll_seconds)  # others' trials still run: one may die and come back
            continue
        ran += 1
        _run_trial(study, trial, cfg, overrides, threads, dataset, begin)
    with study.locked():
        parent = MlflowClient(study.store.uri).get_run(study.parent_run_id)
        if parent.info.status == "RUNNING":
            report(study)
    return ran


def _next_trial(study: Study) -> optuna.Trial | None:
    """Under the study's lock: fail trials whose worker died (queueing them again), then take
    a queued trial or, within the budget, a new one; None when there is nothing to take."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study.optuna)
    trials = study.optuna.get_trials(deepcopy=False)
    waiting = any(t.state == TrialState.WAITING for t in trials)
    if not waiting and len(counted(trials)) >= study.search.n_trials:
        return None
    with warnings.catch_warnings():  # ask/tell with heartbeats: ours, not Study.optimize's
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        trial = study.optuna.ask()
    # its first heartbeat before the lock is released: a retried trial carries its dead
    # predecessor's last one, which the next worker to look would take for a dead worker
    storage = study.optuna._storage
    assert isinstance(storage, BaseHeartbeat)
    storage.record_heartbeat(trial._trial_id)
    study.optuna.sampler = _sampler(study.search.sampler_seed, trial.number)
    return trial


def _finished(study: Study) -> bool:
    active = (TrialState.RUNNING, TrialState.WAITING)
    return not study.optuna.get_trials(deepcopy=False, states=active)


def _run_trial(
    study: Study,
    trial: optuna.Trial,
    cfg: AppConfig,
    overrides: Sequence[str],
    threads: int | None,
    dataset: Dataset | None,
    begin: float,
) -> None:
    """One trial as one child run; Optuna learns its outcome (value, pruned or failed)."""
    name = study.search.study
    values = {key: suggest(trial, key, spec) for key, spec in study.search.params.items()}
    settings = {**values, "tracking.run_name": f"trial {trial.number}"}
    trial_cfg = validate(with_settings(cfg.model_dump(mode="json"), settings))
    shown = [f"{k}={json.dumps(v) if not _scalar(v) else v}" for k, v in values.items()]
    given = [o for o in overrides if not o.lstrip("+~").startswith("search")]
    reporter = ReportToTrial(trial)
    tags = {Tag.SEARCH_STUDY: name, Tag.SEARCH_TRIAL: str(trial.number), Tag.KIND: Kind.TRIAL}
    state, value = TrialState.FAIL, None
    before = recorder.last_run_id()
    with Heartbeat(study.optuna._storage, trial._trial_id):
        try:
            metrics = training.run(
                trial_cfg,
                [*given, *shown],
                study.parent_run_id,
                threads=threads,
                started=time.perf_counter(),
                dataset=dataset,
                callbacks=[reporter],
                tags=tags,
            )
            state, value = TrialState.COMPLETE, metrics[OBJECTIVE]
        except Pruned as pruned:
            state = TrialState.PRUNED
            log.info("Trial %d %s", trial.number, pruned)
        except KeyboardInterrupt:
            study.optuna.tell(trial, state=TrialState.FAIL)
            _end_parent_if_idle(study, "KILLED")
            raise
        except Exception:
            log.exception("Trial %d failed (its run is marked FAILED); the study goes on", trial)
    try:
        study.optuna.tell(trial, value, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale meanwhile: retried
        log.warning("Trial %d was taken for dead while it ran; its retry stands", trial.number)
    run_id = recorder.last_run_id()
    if run_id and run_id != before:  # (none if the trial failed before its run began)
        wall = time.perf_counter() - begin
        MlflowClient(study.store.uri).log_metric(run_id, Metric.SECONDS_TRIAL, wall)
    if state == TrialState.COMPLETE:
        log.info("Trial %d: %s %.4f (%s)", trial.number, OBJECTIVE, value, ", ".join(shown))


def _end_parent_if_idle(study: Study, status: str) -> None:
    """Ctrl-C of the last worker with a trial: the parent stops RUNNING (a rerun resumes)."""
    with contextlib.suppress(Exception):
        if not study.optuna.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            MlflowClient(study.store.uri).set_terminated(study.parent_run_id, status)


# --- the report ----------------------------------------------------------------------------


def report(study: Study) -> str | None:
    """Log the study's report onto its parent run and end it (FINISHED when a trial
    completed, else FAILED); return the best trial's experiment YAML, if any."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from pipeline.jobs.sweep import log_comparison
    from pipeline.reporting.comparison import compare, find_runs

    client = MlflowClient(study.store.uri)
    parent = study.parent_run_id
    folder = Artifact.SEARCH_DIR
    runs = find_runs([study.store.experiment_id], parent)
    ranked_first = None
    if not runs.empty:
        comparison = compare(runs, client)
        ranked_first = comparison.best
        pruned = runs.get(f"tags.{Tag.PRUNED}", pd.Series(index=runs.index, dtype=object))
        pruned_ids = set(runs.loc[pruned == "true", "run_id"])
        comparison.failures = comparison.failures[~comparison.failures["run_id"].isin(pruned_ids)]
        log_comparison(client, parent, comparison, f"study {study.search.study}")
    trials = study.optuna.trials_dataframe()
    client.log_text(parent, trials.to_csv(index=False), f"{folder}/trials.csv")
    for name, fig in optuna_figures(study.optuna).items():
        client.log_figure(parent, fig, f"{folder}/{name}.png")
        plt.close(fig)
    states = [t.state for t in study.optuna.trials]
    tags = {f"{Tag.SEARCH}.{s.name.lower()}": str(states.count(s)) for s in set(states)}
    text = None
    if TrialState.COMPLETE in states:
        best = _best_trial(study.optuna, runs, ranked_first)
        matches = runs[
            (runs.get(f"tags.{Tag.SEARCH_TRIAL}") == str(best.number))
            & (runs["status"] == "FINISHED")
        ]
        if not matches.empty:
            run_id = str(matches.iloc[0]["run_id"])
            text = experiment_yaml(
                _trial_config(client, run_id, study.tracking),
                best,
                study.search.study,
                study.search.export,
            )
            client.log_text(parent, text, f"{folder}/best_experiment.yaml")
            tags |= {
                f"{Tag.SEARCH}.best_trial": str(best.number),
                f"{Tag.SEARCH}.best_run_id": run_id,
            }
            if study.search.export:
                path = config_dir() / "experiment" / f"{study.search.export}.yaml"
                path.write_text(text)
                log.info("Best trial written to %s", path)
    for key, value in tags.items():
        client.set_tag(parent, key, value)
    if not _finished(study):
        log.info("Report of study '%s' logged; trials still run", study.search.study)
        return text
    client.set_terminated(parent, "FINISHED" if text else "FAILED")
    log.info("Study '%s' ended: report on its parent run %s", study.search.study, parent)
    return text


def _trial_config(client: MlflowClient, run_id: str, tracking: TrackingConfig) -> dict[str, Any]:
    """A trial run's logged config, read back as a record (validated, no opt-ins from it),
    with no `train.resume`: the exported experiment holds settings, never a run to act on."""
    from pipeline.config.logged import from_record, read_record

    path = Path(client.download_artifacts(run_id, Artifact.CONFIG))
    cfg = from_record(read_record(path, f"run {run_id}'s {Artifact.CONFIG}"), run_id, {}, tracking)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": None})})
    return cfg.model_dump(mode="json")


def _best_trial(
    study: optuna.Study, runs: pd.DataFrame, ranked_first: pd.Series | None
) -> FrozenTrial:
    """The trial of the run that the comparison ranks first: valid accuracy ties are common
    (one image of 687 is 0.15 point), and Optuna's `best_trial` breaks them by trial number,
    the comparison by the lower penalty-free valid loss. One rule, so the exported config, the
    `search.best_trial` tag and the report's best run are the same trial."""
    if ranked_first is not None:
        tag = runs.loc[runs["run_id"] == ranked_first["run_id"], f"tags.{Tag.SEARCH_TRIAL}"]
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if not tag.empty and str(trial.number) == str(tag.iloc[0]):
                return trial
    return study.best_trial


def optuna_figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's matplotlib figures that this study can draw (importances need two complete
    trials, for instance): name -> matplotlib Figure."""
    import numpy as np
    from optuna.visualization import matplotlib as plots

    draw: dict[str, Callable[[optuna.Study], Any]] = {
        "optimization_history": plots.plot_optimization_history,
        "param_importances": plots.plot_param_importances,
        "parallel_coordinate": plots.plot_parallel_coordinate,
        "slice": plots.plot_slice,
    }
    figures = {}
    # the slice plot's categorical axes (layer lists, batch sizes) make matplotlib log a line
    # per axis saying that their labels look like numbers: they are meant as categories
    category_log = logging.getLogger("matplotlib.category")
    level = category_log.level
    category_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", "This figure includes Axes", UserWarning)
            for name, plot in draw.items():
                try:
                    axes = plot(study)
                except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                    log.info("No %s figure: %s", name, exc)
                    continue
                fig = np.asarray(axes).flat[0].figure
                fig.set_size_inches(max(fig.get_size_inches()[0], 8), 5)
                fig.tight_layout()
                figures[name] = fig
    finally:
        category_log.setLevel(level)
    return figures


def experiment_yaml(
    config: Mapping[str, Any], best: FrozenTrial, study: str, export: str | None
) -> str:
    """The best trial's model and train settings as a `conf/experiment/` file: the whole of
    both sections, so that it needs nothing else (data comes from the command line)."""
    name = export or f"{study}_best"
    head = [
        "# @package _global_",
        f"# The best trial ({best.number}) of the study '{study}': {OBJECTIVE} {best.value:.4f}.",
        f"#   python -m pipeline experiment={name} [data=notmnist data.path=...]",
        "# Written by `python -m pipeline.search` (search.export); the searched values:",
        *(f"#   {k}: {v}" for k, v in best.params.items()),
    ]
    body = {
        "model": config["model"],
        "train": config["train"],
        "tracking": {"experiment": name},
    }
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False, default_flow_style=None)


# --- a command -----------------------------------------------------------------------------


def main(
    search: SearchConfig,
    cfg: AppConfig,
    overrides: Sequence[str],
    space: str = "",
    hydra_overrides: Sequence[str] = (),
) -> int:
    """`notmnist search`: join the study and work on it (with `search.workers - 1` more local
    worker processes), or only report it. A local worker that failed is a RunsFailedError."""
    from pipeline.jobs.training import load_data
    from pipeline.stages.train import limit_threads

    if search.report_only:
        study = join(search, cfg, space)
        with study.locked():
            report(study)
        return 0
    threads = search.threads or max(1, (os.cpu_count() or 1) // search.workers)
    limit_threads(threads)
    command = [*overrides, *hydra_overrides]
    helpers = [_spawn(command, threads, i) for i in range(1, search.workers)]
    try:
        varies_data = any(key.startswith("data.") for key in search.params)
        dataset = None if varies_data else load_data(cfg.data)  # once per worker, not per trial
        study = join(search, cfg, space)
        ran = work(study, cfg, overrides, threads, dataset)
    finally:
        codes = [_reap(p) for p in helpers]
    log.info("This worker ran %d trials of study '%s'", ran, search.study)
    if failed := [c for c in codes if c]:
        raise RunsFailedError(
            f"{len(failed)} of the study's {len(codes)} other local workers failed "
            f"(exit codes {', '.join(map(str, failed))})"
        )
    return 0


def _spawn(overrides: Sequence[str], threads: int, index: int) -> subprocess.Popen[bytes]:
    """One more worker: the same command, as a single worker with its share of the cores."""
    mine = ("search.workers=", "search.threads=", "hydra.run.dir=", "hydra.mode=")
    own = [o for o in overrides if not o.startswith(mine)]
    args = [*own, "search.workers=1", f"search.threads={threads}"]
    args += [f"hydra.run.dir=outputs/search-workers/{os.getpid()}-{index}"]
    return subprocess.Popen([sys.executable, "-m", "pipeline", "search", *args])


def _reap(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait()
    except BaseException:
        proc.terminate()
        return proc.wait()
