"""Training stage: optimiser, early termination and a reproducible `fit`."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import pandas as pd
import tensorflow as tf

from pipeline.data import Split


@dataclass(frozen=True)
class TrainResult:
    """Per-epoch history (index: epoch, 1-based) and which epoch's weights the model now holds."""

    history: pd.DataFrame
    best_epoch: int
    stopped_early: bool
    seconds: float

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


def fit(
    model: keras.Model,
    train: Split,
    valid: Split,
    *,
    optimizer: keras.optimizers.Optimizer,
    epochs: int,
    batch_size: int,
    early_stopping_monitor: str | None = "val_loss",
    patience: int = 3,
    min_delta: float = 0.0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
) -> TrainResult:
    """Compile and train on raw uint8 images; `early_stopping_monitor=None` trains all epochs.

    EarlyStopping restores the best epoch's weights, so `best_epoch` is the epoch that
    evaluation and the logged model see. `verbose="auto"` shows Keras' progress bar on a
    terminal and one line per epoch in logs and pipes.
    """
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
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
    start = time.perf_counter()
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
    seconds = time.perf_counter() - start
    table = pd.DataFrame(history.history)
    table.index = pd.RangeIndex(1, len(table) + 1, name="epoch")
    best_epoch = stopper.best_epoch + 1 if stopper is not None else len(table)
    stopped_early = stopper is not None and stopper.stopped_epoch > 0
    return TrainResult(table, best_epoch, stopped_early, seconds)
