"""Epoch logging and stopping on a swallowed Ctrl-C."""

from __future__ import annotations

import signal

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking.runs.lifecycle import open_run, raise_interrupt
from pipeline.tracking.store.connect import connect


def _status(store_uri: str, run_id: str) -> str:
    return MlflowClient(store_uri).get_run(run_id).info.status


def test_epoch_logger_logs_once_per_epoch_with_epoch_steps(store_uri: str) -> None:
    import keras
    import numpy as np

    from pipeline.tracking.recording.callbacks import MlflowEpochLogger, to_client

    store = connect(store_uri, "exp")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x, y = np.random.default_rng(0).normal(size=(32, 4)), np.arange(32) % 2
    with open_run(store, "epochs") as run:
        model.fit(
            x,
            y,
            epochs=3,
            validation_data=(x, y),
            verbose=0,
            callbacks=[MlflowEpochLogger(to_client(run.run_id))],
        )
    client = MlflowClient(store_uri)
    names = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds")
    for name in (*names, "l2_penalty"):
        history = client.get_metric_history(run.run_id, name)
        assert [m.step for m in history] == [1, 2, 3], name
    assert client.get_metric_history(run.run_id, "learning_rate")[0].value == pytest.approx(0.1)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the point
def test_interrupt_swallowed_by_a_finaliser_still_stops_training(store_uri: str) -> None:
    """A Ctrl-C whose KeyboardInterrupt lands in a finaliser is printed and ignored by Python;
    training must stop anyway, at the end of that epoch, and the run be marked KILLED."""
    import keras
    import numpy as np

    from pipeline.tracking.recording.callbacks import StopOnSignal

    class Finaliser:
        def __del__(self) -> None:
            raise_interrupt(signal.SIGINT, None)

    epochs: list[int] = []

    class CtrlCInFinaliser(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            epochs.append(epoch)
            if epoch == 1:
                Finaliser()  # collected at once: its KeyboardInterrupt is swallowed

    store = connect(store_uri, "exp")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(32, 4)), np.arange(32) % 2
    with pytest.raises(KeyboardInterrupt), open_run(store, "stopped") as run:
        model.fit(x, y, epochs=20, verbose=0, callbacks=[CtrlCInFinaliser(), StopOnSignal()])
    assert epochs == [0, 1]
    assert _status(store_uri, run.run_id) == "KILLED"
