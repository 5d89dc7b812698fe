"""MLflow plumbing: store location, run life cycle, epoch logging."""

from __future__ import annotations

import signal
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipeline import tracking
from pipeline.config import PROJECT_ROOT


def test_default_store_is_under_project_mlruns() -> None:
    uri = tracking.resolve_tracking_uri(None)
    assert uri == f"sqlite:///{PROJECT_ROOT / 'mlruns' / 'mlflow.db'}"
    assert (
        tracking.default_artifact_location(uri) == (PROJECT_ROOT / "mlruns" / "artifacts").as_uri()
    )


def test_relative_sqlite_path_is_taken_from_project_root(tmp_path: Path) -> None:
    assert tracking.resolve_tracking_uri("sqlite:///stores/x.db", root=tmp_path) == (
        f"sqlite:///{tmp_path / 'stores' / 'x.db'}"
    )
    absolute = f"sqlite:///{tmp_path / 'a.db'}"
    assert tracking.resolve_tracking_uri(absolute) == absolute
    assert tracking.resolve_tracking_uri("http://mlflow:5000") == "http://mlflow:5000"
    assert tracking.default_artifact_location("http://mlflow:5000") is None


def test_uri_without_scheme_is_rejected() -> None:
    with pytest.raises(ValueError, match="has no scheme"):
        tracking.resolve_tracking_uri("mlruns")


def test_connect_creates_experiment_once(store_uri: str, tmp_path: Path) -> None:
    first = tracking.connect(store_uri, "exp")
    again = tracking.connect(store_uri, "exp")
    assert first.experiment_id == again.experiment_id
    experiment = MlflowClient(store_uri).get_experiment(first.experiment_id)
    assert experiment.artifact_location == (tmp_path / "mlruns" / "artifacts").as_uri()


def test_deleted_experiment_is_a_clear_error(store_uri: str) -> None:
    store = tracking.connect(store_uri, "gone")
    MlflowClient(store_uri).delete_experiment(store.experiment_id)
    with pytest.raises(ValueError, match="'gone' is deleted"):
        tracking.connect(store_uri, "gone")


def _status(store_uri: str, run_id: str) -> str:
    return MlflowClient(store_uri).get_run(run_id).info.status


def test_finished_run(store_uri: str) -> None:
    store = tracking.connect(store_uri, "exp")
    with tracking.tracked_run(store, "ok") as run:
        mlflow.log_metric("x", 1.0)
    assert _status(store_uri, run.info.run_id) == "FINISHED"
    assert mlflow.active_run() is None


def test_exception_marks_run_failed_with_traceback(store_uri: str) -> None:
    store = tracking.connect(store_uri, "exp")
    with pytest.raises(RuntimeError, match="boom"), tracking.tracked_run(store) as run:
        raise RuntimeError("boom")
    client = MlflowClient(store_uri)
    assert _status(store_uri, run.info.run_id) == "FAILED"
    assert client.get_run(run.info.run_id).data.tags["error"] == "RuntimeError: boom"
    text = Path(client.download_artifacts(run.info.run_id, "error.txt")).read_text()
    assert "RuntimeError: boom" in text


def test_interrupt_marks_run_killed(store_uri: str) -> None:
    store = tracking.connect(store_uri, "exp")
    with pytest.raises(KeyboardInterrupt), tracking.tracked_run(store) as run:
        raise KeyboardInterrupt
    assert _status(store_uri, run.info.run_id) == "KILLED"
    assert mlflow.active_run() is None


def test_flatten_dots_nested_keys() -> None:
    flat = tracking.flatten({"train": {"early_stopping": {"patience": 3}, "epochs": 2}, "a": 1})
    assert flat == {"train.early_stopping.patience": 3, "train.epochs": 2, "a": 1}


def test_git_tags_name_the_commit(tmp_path: Path) -> None:
    tags = tracking.git_tags()
    if tags:  # a checkout with git available
        assert len(tags["mlflow.source.git.commit"]) == 40
        assert tags["git.dirty"] in {"true", "false"}
    assert tracking.git_tags(root=tmp_path) == {}  # not a repository: no tags, no error


def test_epoch_logger_logs_once_per_epoch_with_epoch_steps(store_uri: str) -> None:
    import keras
    import numpy as np

    from pipeline.callbacks import MlflowEpochLogger

    store = tracking.connect(store_uri, "exp")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    x, y = np.random.default_rng(0).normal(size=(32, 4)), np.arange(32) % 2
    with tracking.tracked_run(store) as run:
        model.fit(
            x,
            y,
            epochs=3,
            validation_data=(x, y),
            verbose=0,
            callbacks=[MlflowEpochLogger(run.info.run_id)],
        )
    client = MlflowClient(store_uri)
    for name in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_seconds"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2, 3], name
    assert client.get_metric_history(run.info.run_id, "learning_rate")[0].value == pytest.approx(
        0.1
    )


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the point
def test_interrupt_swallowed_by_a_finaliser_still_stops_training(store_uri: str) -> None:
    """A Ctrl-C whose KeyboardInterrupt lands in a finaliser is printed and ignored by Python;
    training must stop anyway, at the end of that epoch, and the run be marked KILLED."""
    import keras
    import numpy as np

    from pipeline.callbacks import StopOnSignal

    class Finaliser:
        def __del__(self) -> None:
            tracking.raise_interrupt(signal.SIGINT, None)

    epochs: list[int] = []

    class CtrlCInFinaliser(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            epochs.append(epoch)
            if epoch == 1:
                Finaliser()  # collected at once: its KeyboardInterrupt is swallowed

    store = tracking.connect(store_uri, "exp")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(32, 4)), np.arange(32) % 2
    with pytest.raises(KeyboardInterrupt), tracking.tracked_run(store) as run:
        model.fit(x, y, epochs=20, verbose=0, callbacks=[CtrlCInFinaliser(), StopOnSignal()])
    assert epochs == [0, 1]
    assert _status(store_uri, run.info.run_id) == "KILLED"


def test_signals_are_restored_after_a_run(store_uri: str) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with tracking.tracked_run(tracking.connect(store_uri, "exp")):
        assert signal.getsignal(signal.SIGTERM) is tracking.raise_interrupt
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
