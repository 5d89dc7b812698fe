"""The run recorder: a helper process makes the MLflow calls while the trainer goes on, and
nothing is lost on the way (issue 13: the fast path records everything the slow one did)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pytest
from conftest import ENDLESS, PROJECT_ROOT, TINY, running, wait_for_epoch
from mlflow.tracking import MlflowClient

from pipeline.jobs.training import run
from pipeline.tracking.recording import recorder
from pipeline.tracking.store.location import TrackingError

pytestmark = pytest.mark.slow

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_data_loss", "l2_penalty")


def _only_run(uri: str) -> Any:
    client = MlflowClient(uri)
    [found] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return found


def _writers_of(uri: str) -> list[int]:
    """The pids of live recorder helpers started for the store `uri` (by their environment)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if b"pipeline.tracking.recording.writer" not in (proc / "cmdline").read_bytes():
                continue
            if f"MLFLOW_TRACKING_URI={uri}".encode() in (proc / "environ").read_bytes():
                state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
                if state != "Z":
                    pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _assert_complete(uri: str, found: Any, epochs: int) -> None:
    """Every epoch's metrics, the params, the config, the data's identity and card."""
    client = MlflowClient(uri)
    run_id = found.info.run_id
    for name in EPOCH_METRICS:
        steps = [m.step for m in client.get_metric_history(run_id, name)]
        assert steps == list(range(1, epochs + 1)), name
    assert found.data.params["model.hidden_units"] == "[32]"
    assert found.data.tags["data.digest"]
    assert found.data.tags["pid"]  # the trainer's, for the stale-runs check
    assert {d.dataset.name for d in found.inputs.dataset_inputs} == {
        "synthetic-train",
        "synthetic-valid",
        "synthetic-test",
    }
    listed = {a.path for a in client.list_artifacts(run_id)}
    assert {"config", "data"} <= listed


# `python -m pipeline ...` that writes, as it exits, the modules it imported to a file
WATCHED = (
    "import atexit, runpy, sys\n"
    "out = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(out, 'w').write('\\n'.join(sorted(sys.modules))))\n"
    "runpy.run_module('pipeline', run_name='__main__', alter_sys=True)\n"
)


def test_fast_path_records_everything_and_the_model_loads(store_uri: str, tmp_path: Path) -> None:
    """The command line: the run is FINISHED with all its records once the command returns
    (which skips TensorFlow's teardown), the model loads and predicts, no helper is left;
    and the trainer never imported MLflow (its helper did)."""
    modules = tmp_path / "modules.txt"
    result = subprocess.run(
        [sys.executable, "-c", WATCHED, str(modules), *TINY, f"hydra.run.dir={tmp_path / 'out'}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    imported = modules.read_text().split()
    assert {"keras", "pipeline.jobs.training"} <= set(imported)
    assert not [name for name in imported if name.split(".")[0] == "mlflow"]
    found = _only_run(store_uri)
    assert found.info.status == "FINISHED"
    _assert_complete(store_uri, found, epochs=3)
    # MLflow's context tags name the trainer's program, not the helper's
    assert found.data.tags["mlflow.source.name"].endswith("pipeline/__main__.py")
    assert found.data.tags["mlflow.user"]
    metrics = found.data.metrics
    for phase in ("startup", "data", "build", "train", "evaluate", "logging"):
        assert metrics[f"seconds.{phase}"] >= 0, phase
    assert {"test_accuracy", "best_val_accuracy", "param_count"} <= metrics.keys()
    client = MlflowClient(store_uri)
    figures = {a.path for a in client.list_artifacts(found.info.run_id, "figures")}
    assert len(figures) == 3
    [output] = found.outputs.model_outputs
    model = mlflow.pyfunc.load_model(client.get_logged_model(output.model_id).artifact_location)
    probabilities = model.predict(np.zeros((2, 28, 28), dtype=np.uint8))
    assert probabilities.shape == (2, 10)
    assert f"Model: models:/{output.model_id}" in result.stdout
    assert (tmp_path / "out" / "train.log").read_text().count("Test accuracy") == 1  # flushed
    deadline = time.monotonic() + 10  # it exits once it said the runs are recorded
    while _writers_of(store_uri) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _writers_of(store_uri)


class _InterruptAfterTraining(keras.callbacks.Callback):
    """Ctrl-C the moment training ends: evaluation and the model are still to come."""

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the signal handler raises in this thread


def test_interrupted_right_after_training_loses_nothing_sent(tiny, store_uri: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        run(tiny(), callbacks=[_InterruptAfterTraining()])
    found = _only_run(store_uri)
    assert found.info.status == "KILLED"
    assert found.data.tags["error"] == "interrupted (Ctrl-C or SIGTERM)"
    _assert_complete(store_uri, found, epochs=3)
    # the next run in this process starts clean
    assert run(tiny("tracking.experiment=after", "train.epochs=1"))["epochs_run"] == 1


def test_a_failed_record_fails_the_run_in_one_line(tiny, tmp_path: Path) -> None:
    """An artifact store that cannot be written: the run ends FAILED, saying why, and the
    trainer hears of it as a TrackingError. (The first record to fail is the environment's,
    logged as the run starts.)"""
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    cfg = tiny(
        "tracking.experiment=blocked",
        f"tracking.artifact_location={(blocked / 'artifacts').as_uri()}",
    )
    with pytest.raises(TrackingError, match=r"recording the run \(start\) failed"):
        run(cfg)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    found = _only_run(uri)
    assert found.info.status == "FAILED"
    assert "recording the run's environment failed" in found.data.tags["error"]


def test_killed_trainer_leaves_no_run_running(store_uri: str, tmp_path: Path) -> None:
    """SIGKILL gives the trainer no chance to end its run: its helper does, as KILLED."""
    with running(*ENDLESS, f"hydra.run.dir={tmp_path / 'out'}") as proc:
        run_id = wait_for_epoch(store_uri, proc)
        proc.kill()
        proc.wait(timeout=30)
    client = MlflowClient(store_uri)
    deadline = time.monotonic() + 30
    while client.get_run(run_id).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    ended = client.get_run(run_id)
    assert ended.info.status == "KILLED"
    assert "ended without ending its run" in ended.data.tags["error"]


def test_recorder_survives_its_helper_dying(tiny) -> None:
    """A helper that died (killed by hand, out of memory) is replaced for the next run."""
    run(tiny("tracking.experiment=first", "train.epochs=1"))
    first = recorder.recorder()
    first.process.kill()
    first.process.wait()
    assert run(tiny("tracking.experiment=second", "train.epochs=1"))["epochs_run"] == 1
    assert recorder.recorder() is not first
