"""Training stage: optimiser, early termination and a reproducible `fit`."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline.errors import TrainingError
from pipeline.names import Metric
from pipeline.stages.data import Split


class DivergedError(TrainingError):
    """The loss became NaN or infinite: nothing sensible can be learnt from there on."""


class StopOnDivergence(keras.callbacks.Callback):
    """Ends training with `DivergedError` at the end of the first epoch whose loss is NaN
    or infinite (keras' TerminateOnNaN stops quietly, and the run would end FINISHED).

    Checked once per epoch, from the logs Keras already computed: no per-step cost.
    """

    def __init__(self, learning_rate: float | None = None) -> None:
        super().__init__()
        self.learning_rate = learning_rate

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key in ("loss", "val_loss"):
            value = float((logs or {}).get(key, 0.0))
            if not math.isfinite(value):
                now = f" (now {self.learning_rate:g})" if self.learning_rate is not None else ""
                raise DivergedError(
                    f"{key} became {value} at epoch {epoch + 1}: try a smaller "
                    f"train.learning_rate{now}, or check the data for extreme values"
                )


@dataclass(frozen=True)
class TrainResult:
    """Per-epoch history (index: epoch, 1-based) and which epoch's weights the model now holds."""

    history: pd.DataFrame
    best_epoch: int
    stopped_early: bool

    @property
    def best(self) -> pd.Series:
        """The metrics of the epoch whose weights were kept."""
        return self.history.loc[self.best_epoch]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic.

    With this, the same config on the same machine gives the same metrics to the last digit.
    """
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def limit_threads(threads: int) -> None:
    """Run TensorFlow's ops on at most `threads` threads (before it starts; later, no-op)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already running in this process (a reused sweep worker): keep it
        pass


def make_optimizer(
    *,
    name: str,
    learning_rate: float,
    momentum: float,
    decay_rate: float,
    decay_steps: int,
    staircase: bool,
) -> keras.optimizers.Optimizer:
    """'sgd', 'momentum' (SGD with momentum) or 'adam', with optional exponential decay.

    Like every stage function, it takes its values keyword-only with no defaults: they are
    the config's (conf/train/, mapped by `pipeline.jobs.training.optimizer_arguments`)."""
    rate: float | keras.optimizers.schedules.LearningRateSchedule = learning_rate
    if decay_rate < 1.0:
        rate = keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=decay_steps, decay_rate=decay_rate, staircase=staircase
        )
    if name == "sgd":
        return keras.optimizers.SGD(rate)
    if name == "momentum":
        return keras.optimizers.SGD(rate, momentum=momentum)
    if name == "adam":
        return keras.optimizers.Adam(rate)
    raise ValueError(f"unknown optimizer {name!r}; allowed: sgd, momentum, adam")


def compile_model(
    model: keras.Model, *, optimizer: keras.optimizers.Optimizer, steps_per_execution: int
) -> None:
    """Set up a model for training: cross-entropy on class probabilities, accuracy, and the
    cross-entropy again as a metric, `data_loss` (`val_data_loss`): Keras' `loss` includes the
    L2 penalty, so only the penalty-free one compares runs with different L2 settings. (A
    metric changes no update: the weights and losses stay the same to the last digit.)

    `steps_per_execution` batches run inside one compiled call: the same updates with a
    fraction of Keras' per-step Python work, which dominates small batches on CPU (callbacks
    still see every epoch).
    """
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", keras.metrics.SparseCategoricalCrossentropy(name=Metric.DATA_LOSS)],
        steps_per_execution=steps_per_execution,
    )


def fit(
    model: keras.Model,
    train: Split,
    valid: Split,
    *,
    epochs: int,
    batch_size: int,
    early_stopping_monitor: str | None,
    patience: int,
    min_delta: float,
    verbose: int | str,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    checkpoint_dir: Path | None = None,
) -> TrainResult:
    """Train a compiled model on raw uint8 images; `early_stopping_monitor=None` runs all epochs.

    The settings (`epochs` ... `verbose`) have no defaults: they are the config's (conf/train/,
    mapped by `pipeline.jobs.training.fit_arguments`). `callbacks` and `checkpoint_dir` are
    the caller's hooks, not settings, and default to none.

    EarlyStopping restores the best epoch's weights, so `best_epoch` is the epoch that
    evaluation and the logged model see. `verbose="auto"` shows Keras' progress bar on a
    terminal and one line per epoch in logs and pipes.

    With `checkpoint_dir`, the whole training state is saved there after every epoch, and a
    checkpoint found there is resumed from: the result is the one an uninterrupted `fit`
    gives, to the last digit (see `Checkpoint`). `callbacks` run before the checkpoint
    (after early stopping), so an epoch they logged but the checkpoint missed is run again
    on resume, with the same results: a logger can skip the steps it has.
    """
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    stopper = None
    all_callbacks = list(callbacks)
    if early_stopping_monitor is not None:
        stopper = _ResumableEarlyStopping(
            monitor=early_stopping_monitor,
            patience=patience,
            min_delta=min_delta,
            restore_best_weights=True,
            verbose=1 if verbose else 0,
        )
        all_callbacks.insert(0, stopper)
    initial_epoch, done = 0, pd.DataFrame()
    if checkpoint_dir is not None:
        checkpoint = Checkpoint(checkpoint_dir, stopper)
        initial_epoch, done, stopped = checkpoint.restore(model)
        if stopped:  # early stopping had ended training: only its best weights remain to set
            epochs = initial_epoch
        all_callbacks.append(checkpoint)
    history = model.fit(
        train.images,
        train.labels,
        batch_size=batch_size,
        epochs=epochs,
        initial_epoch=initial_epoch,
        validation_data=(valid.images, valid.labels),
        shuffle=True,
        callbacks=all_callbacks,
        verbose=verbose,
    )
    table = pd.concat([done, pd.DataFrame(history.history)], ignore_index=True)
    table.index = pd.RangeIndex(1, len(table) + 1, name="epoch")
    best_epoch = stopper.best_epoch + 1 if stopper is not None else len(table)
    stopped_early = stopper is not None and stopper.stopped_epoch > 0
    return TrainResult(table, best_epoch, stopped_early)


class _ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose state (best value, wait, best epoch and weights) a checkpoint can
    set: Keras resets it when training begins, which a resumed `fit` does again."""

    restored: dict[str, Any] | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self.restored is not None:
            for name, value in self.restored.items():
                setattr(self, name, value)


_STOPPER_STATE = ("wait", "stopped_epoch", "best", "best_epoch")


class Checkpoint(keras.callbacks.Callback):
    """The training state after every epoch, written so that a kill at any moment leaves
    the last complete one: the model's and optimizer's variables (Keras' weights file), the
    dropout layers' random-generator states (which that file leaves out), EarlyStopping's
    state and best weights, and the history so far. Each epoch goes to its own folder;
    `latest.json`, replaced atomically, names the complete one.

    Resuming with these gives the same result as never stopping: Keras' per-epoch shuffle
    is the same in a new process given the same seeds, as measured by the resume test."""

    def __init__(self, folder: Path, stopper: _ResumableEarlyStopping | None = None) -> None:
        super().__init__()
        self.folder = folder
        self.stopper = stopper
        self.rows: list[dict[str, float]] = []

    def restore(self, model: keras.Model) -> tuple[int, pd.DataFrame, bool]:
        """Load the latest checkpoint into `model` (and the stopper): (epochs done, their
        history, whether early stopping had ended training). (0, empty, False) if none."""
        state = latest_checkpoint(self.folder)
        if state is None:
            return 0, pd.DataFrame(), False
        where = self.folder / state["folder"]
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(where / "model.weights.h5")
        seeds = np.load(where / "seeds.npy")
        for generator, value in zip(_seed_generators(model), seeds, strict=True):
            generator.state.assign(value)
        if self.stopper is not None and "stopper" in state:
            restored: dict[str, Any] = dict(state["stopper"])
            best = np.load(where / "best_weights.npz")
            restored["best_weights"] = [best[f"w{i}"] for i in range(len(best.files))] or None
            self.stopper.restored = restored
        self.rows = state["history"]
        stopped = bool(state.get("stopper", {}).get("stopped_epoch", 0))
        return int(state["epoch"]), pd.DataFrame(self.rows), stopped

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.rows.append({k: float(v) for k, v in (logs or {}).items()})
        where = self.folder / f"epoch-{epoch + 1}"
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        self.model.save_weights(where / "model.weights.h5")
        seeds = [np.asarray(g.state.value) for g in _seed_generators(self.model)]
        np.save(where / "seeds.npy", np.array(seeds))
        state: dict[str, Any] = {"epoch": epoch + 1, "folder": where.name, "history": self.rows}
        if self.stopper is not None:
            state["stopper"] = {k: _plain(getattr(self.stopper, k)) for k in _STOPPER_STATE}
            weights = self.stopper.best_weights or []
            np.savez(where / "best_weights.npz", **{f"w{i}": w for i, w in enumerate(weights)})
        _sync_folder(where)
        latest = self.folder / "latest.json"
        previous = json.loads(latest.read_text())["folder"] if latest.exists() else None
        part = self.folder / "latest.json.part"
        part.write_text(json.dumps(state))
        part.replace(latest)
        if previous and previous != where.name:
            shutil.rmtree(self.folder / previous, ignore_errors=True)


def latest_checkpoint(folder: Path) -> dict[str, Any] | None:
    """The state `latest.json` records (epoch, its folder, the history...), or None when
    `folder` holds no complete checkpoint. What it names is checked to be what `Checkpoint`
    writes (an `epoch-<n>` folder beside it), never followed elsewhere."""
    latest = folder / "latest.json"
    if not latest.is_file():
        return None
    try:
        state = json.loads(latest.read_text())
        epoch, name = state["epoch"], state["folder"]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{latest} is not a readable checkpoint ({exc})") from None
    if type(epoch) is not int or epoch < 1 or name != f"epoch-{epoch}":
        raise CheckpointError(f"{latest} names {name!r} for epoch {epoch!r}; refused")
    return dict(state)


class CheckpointError(ValueError):
    """A checkpoint's files are not what `Checkpoint` writes."""


def _seed_generators(model: keras.Model) -> list[Any]:
    """The random-generator states of the model's layers (dropout masks), in layer order."""
    return [g for layer in model._flatten_layers() for g in getattr(layer, "_seed_generators", [])]


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, np.floating | float) else value


def _sync_folder(folder: Path) -> None:
    """Flush a checkpoint's files to disk before `latest.json` names it (power cuts)."""
    for path in folder.iterdir():
        with path.open("rb+") as f:
            os.fsync(f.fileno())
