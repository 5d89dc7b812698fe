"""One tracked run: data -> model -> train -> evaluate, stages called with explicit arguments."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import keras
import mlflow

from pipeline.config import AppConfig, DataConfig
from pipeline.names import Metric, Tag
from pipeline.stages.data import Dataset, load_synthetic
from pipeline.stages.data.notmnist import load_notmnist
from pipeline.stages.evaluate import evaluate, summarise
from pipeline.stages.model import build_model
from pipeline.stages.train import compile_model, fit, limit_threads, make_optimizer, seed_everything
from pipeline.tracking import connect
from pipeline.tracking.callbacks import MlflowEpochLogger, StopOnSignal
from pipeline.tracking.models import log_keras_model
from pipeline.tracking.records import log_config, log_dataset, log_outcome
from pipeline.tracking.runs import tracked_run

log = logging.getLogger(__name__)
_IMPORTED = time.perf_counter()  # start-up's start when the caller does not say (a library call)

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "synthetic": load_synthetic,
    "notmnist": load_notmnist,
}


def load_data(cfg: DataConfig) -> Dataset:
    """Dispatch on `data.source`; every other data field is the loader's keyword argument."""
    return _LOADERS[cfg.source](**cfg.model_dump(exclude={"source"}))


class Phases:
    """Wall time per phase of a run, recorded as `seconds.<phase>` metrics.

    `startup` runs from `started` (the entry point's first line: Hydra, TensorFlow, MLflow
    imports and the config) to the start of the run. MLflow calls count as `logging`, except
    the per-epoch metrics logged during training, which are `logging_per_epoch` (not `train`).
    """

    def __init__(self, started: float | None = None) -> None:
        begin = _IMPORTED if started is None else started
        self.seconds: dict[str, float] = {"startup": time.perf_counter() - begin}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    def metrics(self) -> dict[str, float]:
        return {f"{Metric.SECONDS_PREFIX}{phase}": value for phase, value in self.seconds.items()}


def run(
    cfg: AppConfig,
    overrides: Sequence[str] = (),
    parent_run_id: str | None = None,
    threads: int | None = None,
    started: float | None = None,
    *,
    dataset: Dataset | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    tags: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Train and evaluate one configuration inside one MLflow run; return its final metrics.

    The run is opened first, so a failure in any stage (bad data file included) is recorded
    as a FAILED run with its traceback rather than lost. `parent_run_id` nests it under a
    sweep; `threads` caps TensorFlow's threads (parallel sweep jobs share the cores);
    `started` is the `time.perf_counter()` at which the program started, for `seconds.startup`.
    A search passes the `dataset` its worker decoded once (else `cfg.data` is loaded), more
    per-epoch `callbacks` (its pruner) and the run's `tags`.
    """
    phases = Phases(started)
    if threads:
        limit_threads(threads)
    with phases("logging"):
        store = connect(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location)
    run_tags = {Tag.KERAS_BACKEND: keras.backend.backend(), **(tags or {})}
    with tracked_run(store, cfg.tracking.run_name, parent_run_id, run_tags) as active:
        with phases("logging"):
            log_config(cfg.model_dump(mode="json"), overrides)
        with phases("data"):
            dataset = load_data(cfg.data) if dataset is None else dataset
        with phases("logging"):
            log_dataset(dataset)

        with phases("build"):
            seed_everything(cfg.train.seed)
            model = build_model(
                hidden_units=cfg.model.hidden_units,
                dropout_rate=cfg.model.dropout_rate,
                l2_beta=cfg.model.l2_beta,
                num_classes=len(dataset.classes),
                image_shape=dataset.train.images.shape[1:],
                name=cfg.model.name,
                **cfg.model.augment.model_dump(),
                seed=cfg.train.seed,
            )
            optimizer = make_optimizer(
                cfg.train.optimizer,
                cfg.train.learning_rate,
                momentum=cfg.train.momentum,
                decay_rate=cfg.train.lr_decay.rate,
                decay_steps=cfg.train.lr_decay.steps,
                staircase=cfg.train.lr_decay.staircase,
            )
            compile_model(model, optimizer, cfg.train.steps_per_execution)

        es = cfg.train.early_stopping
        epoch_logger = MlflowEpochLogger(active.info.run_id)
        with phases("train"):
            result = fit(
                model,
                dataset.train,
                dataset.valid,
                epochs=cfg.train.epochs,
                batch_size=cfg.train.batch_size,
                early_stopping_monitor=es.monitor if es.enabled else None,
                patience=es.patience,
                min_delta=es.min_delta,
                callbacks=[epoch_logger, StopOnSignal(), *callbacks],
                verbose=cfg.train.verbose,
            )
        phases.seconds["train"] -= epoch_logger.seconds
        phases.seconds["logging_per_epoch"] = epoch_logger.seconds

        with phases("evaluate"):
            evaluation = evaluate(model, dataset.test, dataset.classes)
        with phases("logging"):
            metrics = summarise(model, result, evaluation)
            log_outcome(metrics, result, evaluation, dataset)
            if cfg.tracking.log_model:
                log.info("Model: %s", log_keras_model(model, dataset.test.images[:5]))
        mlflow.log_metrics(phases.metrics())

    log.info(
        "Test accuracy %.4f (best epoch %d of %d). Run %s in experiment '%s' at %s",
        metrics[Metric.TEST_ACCURACY],
        result.best_epoch,
        len(result.history),
        active.info.run_id,
        store.experiment,
        store.uri,
    )
    log.info("Open it: %s", store.ui_hint(active.info.run_id))
    return {**metrics, **phases.metrics()}
