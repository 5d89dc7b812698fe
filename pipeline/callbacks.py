"""The one way training metrics reach MLflow, a Keras callback with one batched call per
epoch; a callback that makes sure Ctrl-C stops training; and one that stops a diverged run."""

from __future__ import annotations

import math
import time
from typing import Any

import keras
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from pipeline import tracking


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's `logs` (loss, accuracy, val_loss, val_accuracy), the learning rate
    and the epoch's wall time with step = epoch (1-based, as Keras' progress display counts).

    One `log_batch` per epoch, never per step: logging stays a rounding error next to training.
    """

    def __init__(self, run_id: str, client: MlflowClient | None = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.client = client or MlflowClient()
        self.seconds = 0.0  # spent logging, so that a run can tell logging from training
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        begin = time.perf_counter()
        seconds = begin - self._started
        values = {k: float(v) for k, v in (logs or {}).items()}
        values.setdefault("learning_rate", float(self.model.optimizer.learning_rate))
        values["epoch_seconds"] = seconds
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, v, now, epoch + 1) for k, v in values.items()],
            synchronous=True,
        )
        self.seconds += time.perf_counter() - begin


class DivergedError(RuntimeError):
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


class StopOnSignal(keras.callbacks.Callback):
    """Ends training at the end of the epoch if a Ctrl-C or SIGTERM arrived but Python
    swallowed its KeyboardInterrupt (see `tracking.raise_if_stop_requested`)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        tracking.raise_if_stop_requested()
