"""Training stage: optimiser, early termination and a reproducible `fit`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import pandas as pd
import tensorflow as tf

from pipeline.names import Metric
from pipeline.stages.data import Split


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
    name: str,
    learning_rate: float,
    momentum: float = 0.9,
    decay_rate: float = 1.0,
    decay_steps: int = 1000,
    staircase: bool = False,
) -> keras.optimizers.Optimizer:
    """'sgd', 'momentum' (SGD with momentum) or 'adam', with optional exponential decay."""
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
    model: keras.Model, optimizer: keras.optimizers.Optimizer, steps_per_execution: int = 32
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
    early_stopping_monitor: str | None = "val_loss",
    patience: int = 3,
    min_delta: float = 0.0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
) -> TrainResult:
    """Train a compiled model on raw uint8 images; `early_stopping_monitor=None` runs all epochs.

    EarlyStopping restores the best epoch's weights, so `best_epoch` is the epoch that
    evaluation and the logged model see. `verbose="auto"` shows Keras' progress bar on a
    terminal and one line per epoch in logs and pipes.
    """
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    stopper = None
    all_callbacks = list(callbacks)
    if early_stopping_monitor is not None:
        stopper = keras.callbacks.EarlyStopping(
            monitor=early_stopping_monitor,
            patience=patience,
            min_delta=min_delta,
            restore_best_weights=True,
            verbose=1 if verbose else 0,
        )
        all_callbacks.insert(0, stopper)
    history = model.fit(
        train.images,
        train.labels,
        batch_size=batch_size,
        epochs=epochs,
        validation_data=(valid.images, valid.labels),
        shuffle=True,
        callbacks=all_callbacks,
        verbose=verbose,
    )
    table = pd.DataFrame(history.history)
    table.index = pd.RangeIndex(1, len(table) + 1, name="epoch")
    best_epoch = stopper.best_epoch + 1 if stopper is not None else len(table)
    stopped_early = stopper is not None and stopper.stopped_epoch > 0
    return TrainResult(table, best_epoch, stopped_early)
