"""A run killed without warning (SIGKILL: the OOM killer, a power cut) is found by the
maintenance command, and `train.resume=<run id>` finishes it with the very result of a run
that was never interrupted."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, cli, workdir
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

# Enough epochs that the run is still training when it is killed after its third epoch (and
# few: every epoch is trained twice); dropout (0.5 in model=mlp) and early stopping's state
# must both survive the kill.
CONFIG = (*TINY, "train.epochs=12", "train.early_stopping.patience=5", "tracking.log_model=false")


def _run_named(client: MlflowClient, name: str) -> str:
    [run] = client.search_runs(
        [client.get_experiment_by_name("notmnist").experiment_id],
        f"attributes.run_name = '{name}'",
    )
    return str(run.info.run_id)


def _results(client: MlflowClient, run_id: str) -> dict[str, float]:
    """The final metrics that do not measure time."""
    metrics = client.get_run(run_id).data.metrics
    return {k: v for k, v in metrics.items() if not k.startswith(("seconds.", "epoch_seconds"))}


def _kill_after_epoch(client: MlflowClient, name: str, epoch: int, tmp_path: Path) -> str:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            *CONFIG,
            f"tracking.run_name={name}",
            f"hydra.run.dir={tmp_path / name}",
        ],
        cwd=workdir(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the trainer and its recorder
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                run_id = _run_named(client, name)
            except ValueError:  # not started yet
                time.sleep(0.2)
                continue
            if len(client.get_metric_history(run_id, "loss")) >= epoch:
                # both at once, as a power cut does (the trainer alone: its recorder would
                # end the run KILLED, see tests/tracking/recording/test_recorder.py)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                return run_id
            time.sleep(0.05)
        raise TimeoutError(f"run {name} did not reach epoch {epoch}")
    finally:
        proc.kill()
        proc.communicate()


def test_killed_run_is_found_marked_and_resumed_to_the_same_result(
    store_uri: str, tmp_path: Path
) -> None:
    whole = cli(*CONFIG, "tracking.run_name=whole", f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]
    client = MlflowClient(store_uri)
    whole_id = _run_named(client, "whole")

    run_id = _kill_after_epoch(client, "killed", 3, tmp_path)
    assert client.get_run(run_id).info.status == "RUNNING"  # SIGKILL: nothing could end it
    key = client.get_run(run_id).data.tags["checkpoint"]
    checkpoint = tmp_path / "mlruns" / "checkpoints" / key / "latest.json"
    assert checkpoint.exists()
    # the checkpoint ahead of the store: epoch 2 never reached it (its server was down)
    with contextlib.closing(sqlite3.connect(store_uri.removeprefix("sqlite:///"))) as db:
        db.execute("DELETE FROM metrics WHERE run_uuid = ? AND step = 2", (run_id,))
        db.commit()
    assert [m.step for m in client.get_metric_history(run_id, "loss")][:2] == [1, 3]

    listed = cli("maintenance", "stale-runs")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert f"{run_id}  gone" in listed.stdout
    assert "1 stale run(s)" in listed.stdout
    assert client.get_run(run_id).info.status == "RUNNING"  # listing changes nothing
    killed = cli("maintenance", "stale-runs", "kill=true")
    assert killed.returncode == 0, killed.stderr[-3000:]
    assert client.get_run(run_id).info.status == "KILLED"
    assert "no RUNNING runs" in cli("maintenance", "stale-runs").stdout

    resumed = cli(f"train.resume={run_id}", f"hydra.run.dir={tmp_path / 'resumed'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed"] == "1"
    assert _results(client, run_id) == _results(client, whole_id)  # exact, every metric
    for name in ("loss", "val_loss", "val_accuracy", "learning_rate", "l2_penalty"):
        history = client.get_metric_history(run_id, name)
        expected = client.get_metric_history(whole_id, name)
        assert [m.step for m in history] == [m.step for m in expected]  # each epoch once
        assert [m.value for m in history] == [m.value for m in expected]
    assert not checkpoint.parent.exists()  # a FINISHED run keeps no checkpoint

    again = cli(f"train.resume={run_id}", f"hydra.run.dir={tmp_path / 'again'}")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1] == (
        f"config error: train.resume={run_id}: the run is already FINISHED"
    )
