"""The one way training metrics reach MLflow, a Keras callback with one batched call per
epoch; and a callback that makes sure Ctrl-C stops training. (No MLflow import here: the
trainer's epochs go to the run recorder, `pipeline.tracking.recording.recorder`.)"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import keras

from pipeline.names import Metric as Name
from pipeline.tracking.runs.outcome import raise_if_stop_requested

EpochSink = Callable[[int, Mapping[str, float]], None]  # (step, metrics): one epoch's values
# In a run's checkpoint folder: every epoch's values as sent, a JSON line each, written before
# the epoch's checkpoint; a resumed run fills in from it what the store never received.
JOURNAL = "epochs.jsonl"


def to_client(run_id: str) -> EpochSink:
    """An `EpochSink` that logs straight to a run with MLflow's client, in this process."""
    from pipeline.tracking.recording.records import log_epoch

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

    def __init__(
        self, sink: EpochSink, logged: Collection[int] = (), journal: Path | None = None
    ) -> None:
        super().__init__()
        self.sink = sink
        # a resumed run may repeat epochs the store has (its checkpoint lagged): log each once
        self.logged = frozenset(logged)
        self.journal = journal
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
        values = {k: float(v) for k, v in logs.items()}
        values.setdefault(Name.LEARNING_RATE, float(self.model.optimizer.learning_rate))
        values[Name.EPOCH_SECONDS] = seconds
        if self.journal is not None:
            write_journal(self.journal, epoch + 1, values, int(time.time() * 1000))
        if epoch + 1 not in self.logged:
            self.sink(epoch + 1, values)
        self.seconds += time.perf_counter() - begin


def write_journal(path: Path, step: int, values: Mapping[str, float], time_ms: int) -> None:
    """Append one epoch to the journal, on disk before its checkpoint names the epoch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"step": step, "time_ms": time_ms, "values": dict(values)})
    with path.open("a") as handle:
        handle.write(line + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_journal(path: Path) -> dict[int, tuple[dict[str, float], int]]:
    """step -> (values, time in ms) of every well-formed line (a line cut short by a kill, or
    anything else that is not what `write_journal` writes, is left out)."""
    epochs: dict[int, tuple[dict[str, float], int]] = {}
    if not path.is_file():
        return epochs
    with path.open() as handle:
        for line in handle:
            try:
                entry = json.loads(line)
                step, stamp, values = entry["step"], entry["time_ms"], entry["values"]
            except (ValueError, TypeError, KeyError):
                continue
            numbers = isinstance(values, dict) and all(
                isinstance(k, str) and isinstance(v, float) and math.isfinite(v)
                for k, v in values.items()
            )
            if type(step) is int and step >= 1 and type(stamp) is int and numbers:
                epochs[step] = (values, stamp)
    return epochs


class StopOnSignal(keras.callbacks.Callback):
    """Ends training at the end of the epoch if a Ctrl-C or SIGTERM arrived but Python
    swallowed its KeyboardInterrupt (see `runs.raise_if_stop_requested`)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        raise_if_stop_requested()
