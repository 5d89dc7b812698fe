"""One tracked run: data -> model -> train -> evaluate, stages called with explicit arguments."""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from pipeline.config import AppConfig, ConfigError, DataConfig, TrainConfig
from pipeline.config.logged import LOCATION, from_record, read_record
from pipeline.names import Artifact, Kind, Metric, Tag
from pipeline.reporting.drawings import ConfusionMatrix, LearningCurves, Misclassified, Samples
from pipeline.stages.data import Dataset, load_synthetic
from pipeline.stages.data.card import data_card
from pipeline.stages.data.dataset import DataError
from pipeline.stages.data.notmnist import load_notmnist
from pipeline.stages.evaluate import evaluate, summarise
from pipeline.stages.model import build_model, parameter_count, training_bytes
from pipeline.stages.train import (
    CheckpointError,
    StopOnDivergence,
    compile_model,
    fit,
    latest_checkpoint,
    limit_threads,
    make_optimizer,
    seed_everything,
)
from pipeline.tracking.models.files import save_model_files
from pipeline.tracking.recording.callbacks import (
    JOURNAL,
    MlflowEpochLogger,
    StopOnSignal,
    read_journal,
)
from pipeline.tracking.recording.protocol import (
    DataInput,
    LogConfig,
    LogData,
    LogEvaluation,
    LogMetrics,
    LogModel,
    LogTraining,
)
from pipeline.tracking.recording.recorder import RecordedRun, recorded_run, recorder
from pipeline.tracking.store.location import Store, checkpoint_dir

log = logging.getLogger(__name__)
_IMPORTED = time.perf_counter()  # start-up's start when the caller does not say (a library call)

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "synthetic": load_synthetic,
    "notmnist": load_notmnist,
}


def load_data(cfg: DataConfig) -> Dataset:
    """Dispatch on `data.source`; every other data field is the loader's keyword argument."""
    return _LOADERS[cfg.source](**cfg.model_dump(exclude={"source"}))


# The stages take every setting keyword-only with no default of their own (the YAML under
# conf/ holds the defaults, pipeline.config.schema their types): these map the typed config
# onto their arguments, once, for the run below, a search's trials, the benchmarks and the
# tests alike.


def model_arguments(
    cfg: AppConfig, num_classes: int, image_shape: tuple[int, ...]
) -> dict[str, Any]:
    """`build_model`'s arguments: the `model` section's keys as they are (its `augment` block
    flattened), so that a new model key is written in three places only (the YAML, the schema,
    `build_model`), plus the training seed (augmentation's draws) and the data's shape."""
    return {
        **cfg.model.model_dump(exclude={"augment"}),
        **cfg.model.augment.model_dump(),
        "num_classes": num_classes,
        "image_shape": image_shape,
        "seed": cfg.train.seed,
    }


def optimizer_arguments(train: TrainConfig) -> dict[str, Any]:
    """`make_optimizer`'s arguments from the `train` section."""
    return {
        "name": train.optimizer,
        "learning_rate": train.learning_rate,
        "momentum": train.momentum,
        "decay_rate": train.lr_decay.rate,
        "decay_steps": train.lr_decay.steps,
        "staircase": train.lr_decay.staircase,
    }


def fit_arguments(train: TrainConfig) -> dict[str, Any]:
    """`fit`'s settings from the `train` section (early stopping off: no monitor)."""
    stopping = train.early_stopping
    return {
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "early_stopping_monitor": stopping.monitor if stopping.enabled else None,
        "patience": stopping.patience,
        "min_delta": stopping.min_delta,
        "verbose": train.verbose,
    }


def compiled_model(cfg: AppConfig, num_classes: int, image_shape: tuple[int, ...]) -> keras.Model:
    """The network `cfg` describes, compiled with its optimizer (weights drawn from the
    current seeds: `seed_everything(cfg.train.seed)` first, as `run` does)."""
    model = build_model(**model_arguments(cfg, num_classes, image_shape))
    optimizer = make_optimizer(**optimizer_arguments(cfg.train))
    compile_model(model, optimizer=optimizer, steps_per_execution=cfg.train.steps_per_execution)
    return model


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
    expected_data_digest: str | None = None,
    store: Store | None = None,
    wait: bool = True,
) -> dict[str, float]:
    """Train and evaluate one configuration inside one MLflow run; return its final metrics.

    The run is opened first, so a failure in any stage (bad data file included) is recorded
    as a FAILED run with its traceback rather than lost. `parent_run_id` nests it under a
    sweep; `threads` caps TensorFlow's threads (parallel sweep jobs share the cores);
    `started` is the `time.perf_counter()` at which the program started, for `seconds.startup`.
    A search passes the `dataset` its worker decoded once (else `cfg.data` is loaded), more
    per-epoch `callbacks` (its pruner) and the run's `tags`; `expected_data_digest` (a
    reproduction) makes loaded data with another `data.digest` a DataError before training;
    `store` is the store `cfg.tracking` names, when the caller opened it already.

    MLflow is called by the run recorder's helper process (`pipeline.tracking.recording.recorder`):
    this process trains while it logs. With `wait` (the default) this returns once the run
    is recorded and ended; a sweep in one process passes False and drains the recorder
    before its report, so that each job's figures and model are logged while the next trains.
    """
    phases = Phases(started)
    check_fits(cfg)
    if threads:
        limit_threads(threads)
    if store is None:  # the entry point asks for it before TensorFlow's import, to overlap
        with phases("logging"):
            store = recorder().store(cfg.tracking)
    run_tags = {Tag.KERAS_BACKEND: keras.backend.backend(), **(tags or {})}
    if overrides:  # a sweep's run name shows only the swept values, and those shortened
        run_tags[Tag.JOB_OVERRIDES] = " ".join(overrides)[:5000]
    resume = cfg.train.resume
    if resume is None:  # a resumed run keeps the kind it started as
        run_tags.setdefault(Tag.KIND, Kind.SWEEP_JOB if parent_run_id else Kind.TRAINING)
    logged: frozenset[int] = frozenset()
    # the checkpoint's folder, named here: the run's id is the recorder's to learn, later
    checkpoints = checkpoint_dir(store.uri, uuid.uuid4().hex)
    if resume is not None:
        resumed = resumed_config(store, cfg, overrides)
        cfg, logged, checkpoints = resumed.cfg, resumed.logged, resumed.checkpoints
        run_tags[Tag.RESUMED] = str(resumed.times + 1)
        parent_run_id = None
    run_tags[Tag.CHECKPOINT] = checkpoints.name
    with (
        recorded_run(
            store, cfg.tracking.run_name, parent_run_id, run_tags, resume, wait=wait
        ) as active,
        Meanwhile() as meanwhile,
    ):
        if resume is None:
            active.log(LogConfig(cfg.model_dump(mode="json"), list(overrides)))
        with phases("data"):
            dataset = load_data(cfg.data) if dataset is None else dataset
        if expected_data_digest is not None and dataset.digest() != expected_data_digest:
            raise DataError(
                f"the data differs from the run's: {dataset.source} has data.digest "
                f"{dataset.digest()[:16]}..., the run trained on {expected_data_digest[:16]}..."
            )
        if resume is None:  # (a resumed run logged its data before)
            # made while the model builds and trains: tenths of a second of NumPy and hashing
            # over every pixel, which release the interpreter (the helper logs it meanwhile)
            meanwhile(functools.partial(_log_data, active, dataset))
        else:
            with phases("logging"):
                check_same_data(store, active.run_id, dataset)
                logged = fill_in_epochs(active, checkpoints, logged)

        with phases("build"):
            seed_everything(cfg.train.seed)
            model = compiled_model(cfg, len(dataset.classes), dataset.train.images.shape[1:])

        epoch_logger = MlflowEpochLogger(active.log_epoch, logged, checkpoints / JOURNAL)
        with phases("train"):
            result = fit(
                model,
                dataset.train,
                dataset.valid,
                **fit_arguments(cfg.train),
                callbacks=[
                    epoch_logger,  # first: the diverged epoch is logged, then the run stops
                    StopOnDivergence(cfg.train.learning_rate),
                    StopOnSignal(),
                    *callbacks,
                ],
                checkpoint_dir=checkpoints,
            )
        phases.seconds["train"] -= epoch_logger.seconds
        phases.seconds["logging_per_epoch"] = epoch_logger.seconds

        # logged while this process evaluates: the training's outcome, the model (the kept
        # weights are final), then the evaluation's
        curves = LearningCurves(result.history, result.best_epoch)
        active.log(LogTraining(result.history, result.stopped_early, curves))
        if cfg.tracking.log_model:
            with phases("logging"):
                active.log(LogModel(save_model_files(model, dataset.test.images[:5])))
        with phases("evaluate"):
            evaluation = evaluate(model, dataset.test, dataset.classes)
        with phases("logging"):
            metrics = summarise(model, result, evaluation)
            test, classes = dataset.test, dataset.classes
            active.log(
                LogEvaluation(
                    metrics,
                    evaluation.per_class,
                    ConfusionMatrix(evaluation.confusion, classes),
                    Misclassified(test.images, test.labels, evaluation.predictions, classes),
                )
            )
            if wait:  # until the figures and the model are in the store
                active.recorder.sync()
        active.log(LogMetrics(phases.metrics()))
    shutil.rmtree(checkpoints, ignore_errors=True)  # ended: nothing left to resume

    log.info(
        "Test accuracy %.4f (best epoch %d of %d). Run %s in experiment '%s' at %s",
        metrics[Metric.TEST_ACCURACY],
        result.best_epoch,
        len(result.history),
        active.run_id,
        store.experiment,
        store.uri,
    )
    if active.outcome and active.outcome["model_uri"]:
        log.info("Model: %s", active.outcome["model_uri"])
    log.info("Open it: %s", store.ui_hint(active.run_id))
    return {**metrics, **phases.metrics()}


class Meanwhile:
    """Work done in a thread while the block goes on; leaving the block waits for it and
    raises its error (unless the block raises its own)."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def __call__(self, work: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                work()
            except BaseException as exc:
                self.errors.append(exc)

        thread = threading.Thread(target=guarded, name="meanwhile", daemon=True)
        thread.start()
        self.threads.append(thread)

    def __enter__(self) -> Meanwhile:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        for thread in self.threads:
            thread.join()
        if self.errors and kind is None:
            raise self.errors[0]


def data_record(dataset: Dataset) -> LogData:
    """What a run records of its data: its identity (a SHA-256 over every pixel and label of
    each split, as tags and as MLflow inputs) and its card. Only numbers go to the
    recorder, not the splits: the card's, the splits' shapes and a few sample images."""
    digests = dataset.digests()
    digest = dataset.digest(digests)
    tags = {
        Tag.DATA_DIGEST: digest,
        Tag.DATA_SOURCE: dataset.source[:5000],
        Tag.DATA_FORMAT: dataset.format,
        **{f"{Tag.DATA_DIGEST}.{name}": d for name, d in digests.items()},
    }
    if dataset.report.source_digest:
        tags[Tag.DATA_SOURCE_DIGEST] = dataset.report.source_digest
    inputs = tuple(
        DataInput(
            name=f"{dataset.format}-{name}",
            context=name,
            digest=digests[name][:32],
            images=(split.images.shape, split.images.dtype.str),
            labels=(split.labels.shape, split.labels.dtype.str),
        )
        for name, split in dataset.splits()
    )
    card = data_card(dataset, digest=digest)
    return LogData(
        tags=tags,
        holdout_overlap_removed=dataset.report.holdout_overlap_removed,
        inputs=inputs,
        card=card,
        samples=Samples(card.samples, dataset.classes, dataset.format),
    )


def _log_data(active: RecordedRun, dataset: Dataset) -> None:
    active.log(data_record(dataset))


def check_fits(cfg: AppConfig) -> None:
    """Refuse, before any work, a network whose parameters alone need more memory to train
    than this machine has free (TensorFlow would fail mid-build with an out-of-memory
    traceback, or the OOM killer would end the run)."""
    parameters = parameter_count(cfg.model.hidden_units)
    needed = training_bytes(parameters, cfg.train.optimizer)
    free = _available_memory()
    if free is not None and needed > free:
        units = list(cfg.model.hidden_units)
        raise ConfigError(
            f"model.hidden_units={units}: {parameters:,} parameters need at least "
            f"{needed / 2**30:,.1f} GiB to train ({cfg.train.optimizer}: weights, gradients, "
            f"optimizer state, kept best weights), more than the {free / 2**30:,.1f} GiB "
            "this machine has free"
        )


def _available_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (Linux); None where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass(frozen=True)
class Resumed:
    """What `train.resume` continues: the run's own config, the epochs the store has, how
    often it was resumed before, and its checkpoint's folder."""

    cfg: AppConfig
    logged: frozenset[int]
    times: int
    checkpoints: Path


def resumed_config(store: Store, cfg: AppConfig, overrides: Sequence[str]) -> Resumed:
    """For `train.resume=<run id>`: the run's logged config as this process may act on it
    (`pipeline.config.logged`: data locations and opt-ins given now, this command's tracking
    settings), the epochs it logged and its checkpoint. Raises ConfigError for a run that
    cannot be continued, or whose record asks for what only the command line may grant."""
    from mlflow.tracking import MlflowClient

    run_id = str(cfg.train.resume)
    keys = {o.split("=", 1)[0].lstrip("+~"): o for o in overrides if "=" in o}
    refused = [o for k, o in keys.items() if k != "train.resume" and not k.startswith("tracking.")]
    refused = [o for o in refused if o.split("=", 1)[0].lstrip("+~") not in LOCATION]
    if refused:
        raise ConfigError(
            f"train.resume={run_id} continues the run with its own config: drop "
            f"{' '.join(refused)} (only {', '.join(sorted(LOCATION))} may be given)"
        )
    client = MlflowClient(store.uri)
    try:
        run = client.get_run(run_id)
    except Exception:
        raise ConfigError(f"train.resume={run_id}: no such run in {store.uri}") from None
    if run.info.status == "FINISHED":
        raise ConfigError(f"train.resume={run_id}: the run is already FINISHED")
    if run.info.status == "RUNNING":
        from pipeline.tracking.runs.processes import liveness

        alive = liveness(run.data.tags)
        if alive.state != "gone":
            raise ConfigError(
                f"train.resume={run_id}: the run is RUNNING ({alive.reason}); stop it first"
            )
    current = cfg.model_dump(mode="json")
    given = {k: _setting(current, k) for k in keys if k in LOCATION}
    try:
        logged_file = Path(client.download_artifacts(run_id, Artifact.CONFIG))
    except Exception as exc:
        raise ConfigError(f"train.resume={run_id}: it has no logged config ({exc})") from None
    raw = read_record(logged_file, f"run {run_id}'s {Artifact.CONFIG}")
    own = from_record(raw, run_id, given, cfg.tracking)
    own = own.model_copy(update={"train": own.train.model_copy(update={"resume": run_id})})
    tags = run.data.tags
    try:
        folder = checkpoint_dir(store.uri, tags.get(Tag.CHECKPOINT, run_id))
    except ValueError as exc:
        raise ConfigError(f"train.resume={run_id}: its {Tag.CHECKPOINT} tag: {exc}") from None
    times = tags.get(Tag.RESUMED, "0")
    steps = frozenset(m.step for m in client.get_metric_history(run_id, Metric.LOSS))
    try:
        done = latest_checkpoint(folder)
    except CheckpointError as exc:
        raise ConfigError(f"train.resume={run_id}: {exc}") from None
    if done is None:
        log.info(
            "Resuming run %s: no checkpoint in %s, so training starts again from epoch 1 "
            "(the same seeds give the same epochs; the %d in the store are not logged twice)",
            run_id,
            folder,
            len(steps),
        )
    else:
        log.info(
            "Resuming run %s from its checkpoint after epoch %d (%d epochs in the store)",
            run_id,
            done["epoch"],
            len(steps),
        )
    return Resumed(own, steps, int(times) if times.isdigit() else 0, folder)


def _setting(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def fill_in_epochs(
    active: RecordedRun, checkpoints: Path, logged: frozenset[int]
) -> frozenset[int]:
    """Log the epochs the checkpoint holds but the store lacks (its server was down, its
    recorder frozen) from the checkpoint's journal, each with the time it ended; returns
    every step the run now has, so that the rest of training logs each step once."""
    state = latest_checkpoint(checkpoints)
    if state is None:
        return logged
    journal = read_journal(checkpoints / JOURNAL)
    missing = [s for s in range(1, int(state["epoch"]) + 1) if s not in logged]
    filled = [s for s in missing if s in journal]
    for step in filled:
        values, stamp = journal[step]
        active.log_epoch(step, values, stamp)
    if filled:
        log.info("Filled in epochs %s from the checkpoint (missing from the store)", filled)
    if lost := sorted(set(missing) - set(filled)):
        log.warning("Epochs %s are missing from the store and from the checkpoint", lost)
    return logged | frozenset(filled)


def check_same_data(store: Store, run_id: str, dataset: Dataset) -> None:
    """A resumed run must train on the very data it started with."""
    from mlflow.tracking import MlflowClient

    logged = MlflowClient(store.uri).get_run(run_id).data.tags.get(Tag.DATA_DIGEST)
    if logged != dataset.digest():
        raise DataError(
            f"train.resume={run_id}: the data differs from the run's (digest "
            f"{dataset.digest()[:12]} now, {str(logged)[:12]} logged): restore it to continue"
        )
