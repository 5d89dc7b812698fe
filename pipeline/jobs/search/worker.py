"""A worker's loop: take a trial under the study's lock, train it as a pipeline run while a
thread records its heartbeat, tell Optuna, and go on until the budget is spent.

- a worker takes a trial under the study's lock after counting the trials so far, so the
  budget holds across workers;
- a running trial's worker records a heartbeat; a trial silent for `grace_seconds` (its
  worker died) is failed, its MLflow run marked FAILED, and retried by a live worker;
- per epoch, the trial reports its valid accuracy (comparable across L2 strengths, unlike
  Keras' `val_loss`) to the pruner; a pruned trial's run ends KILLED with `pruned=true`;
- the worker that finds the study finished reruns its best trials over more seeds and logs
  the report onto the parent run (`pipeline.jobs.search.report`).

MLflow is imported only where a worker reads or writes its study's runs, not on the way to
training: a trial's own run is recorded by the run recorder's helper process.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

import keras
import optuna
from optuna.trial import TrialState

from pipeline.config import AppConfig, validate, with_settings
from pipeline.config.schema import ParamSpec
from pipeline.jobs import training
from pipeline.jobs.search.storage import heartbeat_interval, record_heartbeat
from pipeline.jobs.search.study import Study, sampler
from pipeline.names import Kind, Metric, Tag
from pipeline.stages.data import Dataset
from pipeline.tracking.recording import recorder
from pipeline.tracking.runs.outcome import EndRun

log = logging.getLogger(__name__)

OBJECTIVE = Metric.BEST_VAL_ACCURACY  # maximised; per epoch, `val_accuracy` goes to the pruner


class Pruned(EndRun, optuna.TrialPruned):
    """The pruner stopped this trial: its MLflow run ends KILLED with `pruned=true`, and
    Optuna records the trial as PRUNED."""


def suggest(trial: optuna.Trial, key: str, spec: ParamSpec) -> Any:
    """Draw one setting. Choices that Optuna cannot store (lists) go through as JSON text."""
    if spec.kind == "categorical":
        assert spec.choices is not None
        labels = [c if scalar(c) else json.dumps(c) for c in spec.choices]
        label = trial.suggest_categorical(key, labels)
        return spec.choices[labels.index(label)]
    assert spec.low is not None
    assert spec.high is not None
    log_scale = spec.kind.startswith("log")
    if spec.kind.endswith("int"):
        step = int(spec.step or 1)
        return trial.suggest_int(key, int(spec.low), int(spec.high), step=step, log=log_scale)
    return trial.suggest_float(key, spec.low, spec.high, step=spec.step, log=log_scale)


def scalar(value: Any) -> bool:
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

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        interval = heartbeat_interval(self.trial)
        if interval is None:
            return
        while True:
            try:
                record_heartbeat(self.trial)
            except Exception:  # a missed beat is not worth a trial; the next one may pass
                log.debug("heartbeat failed", exc_info=True)
            if self.stop.wait(interval):
                return

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def work(
    study: Study,
    cfg: AppConfig,
    overrides: Sequence[str] = (),
    threads: int | None = None,
    dataset: Dataset | None = None,
    poll_seconds: float = 2.0,
) -> int:
    """Take trials until the study's budget is spent and no trial is left running; then,
    if this worker is the last one, rerun the best trials over more seeds and log the
    study's report. Returns the trials it ran."""
    from mlflow.tracking import MlflowClient

    from pipeline.jobs.search.report import report
    from pipeline.jobs.search.seeds import Reruns

    ran = 0
    while True:
        begin = time.perf_counter()
        with study.locked():
            trial = next_trial(study)
        if trial is None:
            if not study.active():
                break
            time.sleep(poll_seconds)  # others' trials still run: one may die and come back
            continue
        ran += 1
        run_trial(study, trial, cfg, overrides, threads, dataset, begin)
    with study.locked():
        parent = MlflowClient(study.store.uri).get_run(study.parent_run_id)
        if parent.info.status == "RUNNING":
            try:
                report(study, Reruns(cfg, own_overrides(overrides), threads, dataset))
            except KeyboardInterrupt:  # in a rerun: the next worker reports, with those done
                study.end_if_idle("KILLED")
                raise
    return ran


def next_trial(study: Study) -> optuna.Trial | None:
    """Under the study's lock: fail trials whose worker died (queueing them again), then take
    a queued trial or, within the budget, a new one; None when there is nothing to take."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study.optuna)
    trials = study.optuna.get_trials(deepcopy=False)
    waiting = any(t.state == TrialState.WAITING for t in trials)
    if not waiting and study.spent():
        return None
    with warnings.catch_warnings():  # ask/tell with heartbeats: ours, not Study.optimize's
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        trial = study.optuna.ask()
    # its first heartbeat before the lock is released: a retried trial carries its dead
    # predecessor's last one, which the next worker to look would take for a dead worker
    record_heartbeat(trial)
    study.optuna.sampler = sampler(study.search.sampler_seed, trial.number)
    return trial


def own_overrides(overrides: Sequence[str]) -> list[str]:
    """The command line's overrides that apply to each trial's run (not the study's own)."""
    return [o for o in overrides if not o.lstrip("+~").startswith("search")]


def run_trial(
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
    shown = [f"{k}={json.dumps(v) if not scalar(v) else v}" for k, v in values.items()]
    reporter = ReportToTrial(trial)
    tags = {Tag.SEARCH_STUDY: name, Tag.SEARCH_TRIAL: str(trial.number), Tag.KIND: Kind.TRIAL}
    state, value = TrialState.FAIL, None
    before = recorder.last_run_id()
    with Heartbeat(trial):
        try:
            metrics = training.run(
                trial_cfg,
                [*own_overrides(overrides), *shown],
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
            study.end_if_idle("KILLED")
            raise
        except Exception:
            log.exception(
                "Trial %d failed (its run is marked FAILED); the study goes on", trial.number
            )
    try:
        study.optuna.tell(trial, value, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:  # failed as stale meanwhile: retried
        log.warning("Trial %d was taken for dead while it ran; its retry stands", trial.number)
    run_id = recorder.last_run_id()
    if run_id and run_id != before:  # (none if the trial failed before its run began)
        from mlflow.tracking import MlflowClient

        wall = time.perf_counter() - begin
        MlflowClient(study.store.uri).log_metric(run_id, Metric.SECONDS_TRIAL, wall)
    if state == TrialState.COMPLETE:
        log.info("Trial %d: %s %.4f (%s)", trial.number, OBJECTIVE, value, ", ".join(shown))
