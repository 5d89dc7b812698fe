"""Sweeps: jobs nest under one parent run that ends with the comparison report."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import CompletedProcess

import pandas as pd
import pytest
from conftest import ENDLESS, PROJECT_ROOT, TINY, cli, running, wait_for_epoch
from mlflow.tracking import MlflowClient

from pipeline.config import ConfigError

pytestmark = pytest.mark.slow

SHORT = (*TINY, "train.epochs=2")


def _sweep(tmp_path: Path, *overrides: str) -> CompletedProcess[str]:
    return cli("-m", *SHORT, *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}")


def _runs(store_uri: str, experiment: str) -> tuple[MlflowClient, object, list]:
    client = MlflowClient(store_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children


def _table(client: MlflowClient, parent) -> pd.DataFrame:
    return pd.read_csv(client.download_artifacts(parent.info.run_id, "comparison/comparison.csv"))


def test_grid_sweep_nests_runs_and_compares_them(store_uri: str, tmp_path: Path) -> None:
    result = _sweep(
        tmp_path, "model.l2_beta=0,1e-3", "model.dropout_rate=0,0.5", "tracking.experiment=grid"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, parent, children = _runs(store_uri, "grid")
    assert len(children) == 4
    assert parent.info.status == "FINISHED"
    assert {c.info.status for c in children} == {"FINISHED"}
    # short names that fit the UI's column; every override in the run's `overrides` tag
    assert {c.info.run_name for c in children} == {
        f"l2={b} drop={d}" for b in ("0", "0.001") for d in ("0", "0.5")
    }
    assert parent.data.tags["kind"] == "sweep"
    for child in children:
        assert child.data.tags["kind"] == "sweep-job"
        assert child.data.tags["overrides"].startswith("data.train_size=400 ")
        assert (
            child.info.run_name.replace("l2=", "model.l2_beta=").replace(
                "drop=", "model.dropout_rate="
            )
            in child.data.tags["overrides"]
        )
        assert child.data.params["data.fonts"].startswith("23 items sha256:")
        assert "val_data_loss" in child.data.metrics
    # each job's start-up is its own: the first job's includes the imports, later ones' not
    # (they used to add up: 12.7, 26.9, 37.3, 49.7 s)
    startups = [
        c.data.metrics["seconds.startup"] for c in sorted(children, key=lambda c: c.info.start_time)
    ]
    assert all(later < startups[0] for later in startups[1:]), startups
    # identical param and metric names across runs: MLflow's compare view works as is
    assert len({frozenset(c.data.params) for c in children}) == 1
    assert len({frozenset(c.data.metrics) for c in children}) == 1
    table = _table(client, parent)
    assert len(table) == 4
    assert {"model.l2_beta", "model.dropout_rate", "best_val_data_loss", "test_accuracy"} <= set(
        table
    )
    # ranked by valid accuracy, never by val_loss (which includes the L2 penalty)
    assert table["best_val_accuracy"].is_monotonic_decreasing
    listed = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert listed == {
        "comparison/comparison.csv",
        "comparison/heatmap.png",
        "comparison/learning_curves.png",
        "comparison/report.md",
        "comparison/report.html",  # what MLflow's UI renders, figures inline
    }
    page = Path(client.download_artifacts(parent.info.run_id, "comparison/report.html")).read_text()
    assert page.count("data:image/png;base64,") == 2
    # the title says the sweep once; one image's worth under the heatmap, from the splits'
    # sizes the runs logged
    assert f"<h1>Sweep {parent.info.run_name.removeprefix('sweep ')}: 4 runs over " in page
    assert re.search(r"One image is 1/\d+ = [0-9.]+ of valid accuracy", page)
    assert parent.data.tags["best.run_id"] == table["run_id"][0]
    assert parent.data.tags["sweep.runs"] == "4"
    assert "best.model.l2_beta" in parent.data.tags


def test_sweep_with_failing_jobs_still_reports(store_uri: str, tmp_path: Path) -> None:
    result = _sweep(
        tmp_path,
        "data.fonts=[DejaVuSans.ttf],[NoSuchFont.ttf]",
        "model.dropout_rate=0,1.5",
        "tracking.experiment=partly",
    )
    assert result.returncode == 1  # a scheduler sees that something failed
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("failed: 3 of the sweep's 4 runs failed: see the report on its parent run ")
    )
    client, parent, children = _runs(store_uri, "partly")
    assert parent.info.status == "FAILED"
    assert sorted(c.info.status for c in children) == ["FAILED", "FAILED", "FAILED", "FINISHED"]
    # an invalid config's job too (a run made for it, so that the report lists it)
    assert {c.data.tags.get("kind") for c in children} == {"sweep-job"}
    table = _table(client, parent)
    assert len(table) == 4
    report = Path(client.download_artifacts(parent.info.run_id, "comparison/report.md")).read_text()
    assert "## Failed runs" in report
    assert "NoSuchFont.ttf" in report
    assert "config error: model.dropout_rate=1.5" in report
    assert parent.data.tags["best.run_name"] == "fonts=[DejaVuSans.ttf] drop=0"


def test_parallel_jobs_nest_under_the_same_parent(store_uri: str, tmp_path: Path) -> None:
    result = _sweep(
        tmp_path, "hydra/launcher=parallel", "model.dropout_rate=0,0.5", "tracking.experiment=par"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, parent, children = _runs(store_uri, "par")
    assert len(children) == 2
    assert parent.info.status == "FINISHED"
    assert len(_table(client, parent)) == 2


def test_report_command_rebuilds_the_comparison(store_uri: str, tmp_path: Path) -> None:
    from pipeline.cli import report

    assert _sweep(tmp_path, "model.dropout_rate=0,0.5", "tracking.experiment=rep").returncode == 0
    _, parent, _ = _runs(store_uri, "rep")
    done = cli("report", f"run_id={parent.info.run_id}", f"out={tmp_path / 'r.html'}")
    assert done.returncode == 0, done.stderr[-2000:]
    page = (tmp_path / "r.html").read_text()
    assert "<table" in page
    assert page.count("data:image/png;base64,") == 2  # self-contained: the figures inline
    assert report.run(["experiment=rep", f"out={tmp_path / 'e.md'}"]) == 0
    text = (tmp_path / "e.md").read_text()
    # settings and results first, a short run id last (the UI's artifact view is narrow)
    assert re.search(r"^\|\s*model\.dropout_rate\s*\|\s*best_val_accuracy", text, re.M), text[:800]
    assert "2 runs" in text  # the sweep's parent itself is not compared
    with pytest.raises(ConfigError, match="run_id=nope: String should match pattern"):
        report.run(["run_id=nope"])
    with pytest.raises(ConfigError, match=r"experiment=nope: no such experiment in .* \(it has "):
        report.run(["experiment=nope"])


def test_ctrl_c_in_a_sweep_marks_parent_and_job_killed(store_uri: str, tmp_path: Path) -> None:
    with running(
        "-m",
        *ENDLESS,
        "model.dropout_rate=0,0.5",
        "tracking.experiment=stopped",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ) as proc:
        job = wait_for_epoch(store_uri, proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) != 0
    client, parent, children = _runs(store_uri, "stopped")
    assert [c.info.run_id for c in children] == [job]  # the second job never started
    assert client.get_run(job).info.status == "KILLED"
    assert parent.info.status == "KILLED"


def test_sweep_stopped_between_jobs_marks_parent_killed(store_uri: str, tmp_path: Path) -> None:
    """SIGTERM before the first job has opened its run (it is importing TensorFlow)."""
    sweep_file = tmp_path / "sweep" / "mlflow_sweep.json"
    sweep = ("-m", *TINY, "model.dropout_rate=0,0.5", f"hydra.sweep.dir={sweep_file.parent}")
    with running(*sweep) as proc:
        deadline = time.monotonic() + 120
        while not sweep_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
    _, parent, children = _runs(store_uri, "notmnist")
    assert parent.info.status == "KILLED"
    assert {c.info.status for c in children} <= {"KILLED"}


@pytest.mark.parametrize("stop", ["SIGTERM to the group", "SIGKILL to the sweep"])
def test_stopping_a_parallel_sweep_marks_every_run_killed(
    store_uri: str, tmp_path: Path, stop: str
) -> None:
    """SIGTERM to the whole process group, as a terminal's Ctrl-C or a scheduler's stop
    does: the parent and both jobs, which run in worker processes, end KILLED. SIGKILL to the
    sweep's own process alone (the OOM killer, a closed session): nothing can end its parent
    run, which `stale-runs` then finds, but its workers see it gone, end their runs KILLED
    and exit, instead of training on (and holding their memory) for minutes."""
    sweep = (
        "-m",
        "hydra/launcher=parallel",
        *ENDLESS,
        "model.dropout_rate=0,0.5",
        "tracking.experiment=stopped",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *sweep],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        client = MlflowClient(store_uri)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # both jobs are training
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            experiment = client.get_experiment_by_name("stopped")
            if (
                experiment
                and len(client.search_runs([experiment.experiment_id], "metrics.loss >= 0")) == 2
            ):
                break
            time.sleep(0.5)
        else:
            raise TimeoutError("the jobs did not start training")
        if stop == "SIGKILL to the sweep":
            os.kill(proc.pid, signal.SIGKILL)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) != 0
        deadline = time.monotonic() + 90
        while _alive(proc.pid) and time.monotonic() < deadline:  # its workers, their recorders
            time.sleep(0.5)
        assert not _alive(proc.pid), "a worker outlived its sweep"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    _, parent, children = _runs(store_uri, "stopped")
    assert len(children) == 2
    assert [c.info.status for c in children] == ["KILLED", "KILLED"]
    if stop == "SIGKILL to the sweep":
        assert parent.info.status == "RUNNING"  # nothing could end it...
        stale = cli("maintenance", "stale-runs")
        assert f"{parent.info.run_id}  gone" in stale.stdout  # ...but it is found
    else:
        assert parent.info.status == "KILLED"


def _alive(group: int) -> bool:
    """Whether any process of the process group `group` still runs (zombies aside): /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False
