"""The one way training metrics reach MLflow, a Keras callback with one batched call per
epoch; and a callback that makes sure Ctrl-C stops training. (No MLflow import here: the
trainer's epochs go to the run recorder, `pipeline.tracking.recorder`.)"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import keras

from pipeline.names import Metric as Name
from pipeline.tracking.lifecycle import raise_if_stop_requested

EpochSink = Callable[[int, Mapping[str, float]], None]  # (step, metrics): one epoch's values


def to_client(run_id: str) -> EpochSink:
    """An `EpochSink` that logs straight to a run with MLflow's client, in this process."""
    from pipeline.tracking.records import log_epoch

    return functools.partial(log_epoch, run_id)


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's `logs` (loss, accuracy, data_loss and their val_ twins), the L2
    penalty, the learning rate and the epoch's wall time with step = epoch (1-based, as Keras'
    progress display counts).

    The penalty (the sum of the model's regularisation losses at the epoch's end weights) is
    also added to `logs`, so that Keras' history, hence `training/history.csv`, has it too;
    `val_loss` = `val_data_loss` + `l2_penalty`.

    One `log_batch` per epoch, never per step: logging stays a rounding error next to training.
    `sink` takes each epoch's values: the run recorder's `log_epoch`, or `to_client(run_id)`.
    """

    def __init__(self, sink: EpochSink, logged_through: int = 0) -> None:
        super().__init__()
        self.sink = sink
        # a resumed run may repeat epochs it logged before its checkpoint: log each step once
        self.logged_through = logged_through
        self.seconds = 0.0  # spent logging, so that a run can tell logging from training
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        begin = time.perf_counter()
        seconds = begin - self._started
        logs = {} if logs is None else logs
        # in the history of every epoch, logged before or not (a resumed run's repeats)
        logs[Name.L2_PENALTY] = float(sum(float(x) for x in self.model.losses))
        if epoch + 1 <= self.logged_through:
            return
        values = {k: float(v) for k, v in logs.items()}
        values.setdefault(Name.LEARNING_RATE, float(self.model.optimizer.learning_rate))
        values[Name.EPOCH_SECONDS] = seconds
        self.sink(epoch + 1, values)
        self.seconds += time.perf_counter() - begin


class StopOnSignal(keras.callbacks.Callback):
    """Ends training at the end of the epoch if a Ctrl-C or SIGTERM arrived but Python
    swallowed its KeyboardInterrupt (see `runs.raise_if_stop_requested`)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        raise_if_stop_requested()
