"""The command line: `python -m pipeline` as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ENDLESS, SHARED_SAMPLE, TINY, cli, running, wait_for_epoch
from mlflow.tracking import MlflowClient

from pipeline.stages.data.cache import file_digest

SAMPLE_TAR = SHARED_SAMPLE / "notMNIST_sample.tar.gz"


def _runs(store_uri: str) -> list:
    client = MlflowClient(store_uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.dropout_rate=1.5", "model.dropout_rate=1.5: Input should be less than 1"),
        ("model.l2_beta=-1", "model.l2_beta=-1: Input should be greater than or equal to 0"),
        ("train.epochs=0", "train.epochs=0: Input should be greater than or equal to 1"),
        ("train.optimizer=adagrad", "Input should be 'sgd', 'momentum' or 'adam'"),
        ("model.dropout=0.5", "unknown key 'model.dropout': model has augment, dropout_rate"),
        ("+train.epoch=3", "unknown key 'train.epoch': train has batch_size"),
        ("foo=1", "unknown key 'foo': the config has data, model, tracking, train"),
        ("train.seed=-1", "train.seed=-1: Input should be greater than or equal to 0"),
        ("train.seed=4294967296", "train.seed=4294967296: Input should be less than 4294967296"),
        ("data.seed=-1", "data.seed=-1: Input should be greater than or equal to 0"),
        ("model.l2_beta=inf", "model.l2_beta=inf: Input should be a finite number"),
        ("train.learning_rate=inf", "train.learning_rate=inf: Input should be a finite number"),
        ("train.learning_rate=nan", "train.learning_rate=nan: Input should be a finite number"),
    ],
)
def test_bad_config_fails_in_one_line_before_any_run(
    override: str, message: str, store_uri: str, tmp_path: Path
) -> None:
    started = time.perf_counter()
    result = cli(override, f"hydra.run.dir={tmp_path / 'out'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"config error: {result.stderr.split(': ', 1)[1].strip()}"
    ]
    assert message in result.stderr
    assert _runs(store_uri) == []
    assert time.perf_counter() - started < 20  # fails before TensorFlow is even imported


def test_cfg_job_shows_resolved_config(store_uri: str) -> None:
    result = cli("--cfg", "job", "--resolve", "model=logreg", "train.seed=7")
    assert result.returncode == 0, result.stderr
    for line in ("hidden_units: []", "seed: 7", f"uri: {store_uri}", "experiment: notmnist"):
        assert line in result.stdout


def test_help_describes_the_program_its_groups_and_examples() -> None:
    result = cli("train", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("notmnist train: train, evaluate and log one run")
    assert "model: mlp, deep, logreg" in text  # the default first
    assert "experiment: none, best, deep_vs_wide," in text
    assert "hydra/launcher: basic (one job after another), parallel (two at a time)" in text
    assert "notmnist -m model.l2_beta=0,1e-4,1e-3 model.dropout_rate=0,0.5" in text
    assert "  model.dropout_rate = 0.5\n" in text
    assert "Powered by Hydra" not in text  # not Hydra's generic page
    assert cli("model=logreg", "--help").stdout == text  # no command word: train's


def test_shell_completion_lists_options() -> None:
    """What `eval "$(notmnist -sc install=bash)"` asks the program on each Tab."""
    env = {**os.environ, "COMP_LINE": "notmnist hydra/launcher="}
    result = cli("-sc", "query=bash", env=env)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) >= {"hydra/launcher=basic", "hydra/launcher=parallel"}


def test_native_noise_filter_drops_only_the_known_lines() -> None:
    """TensorFlow's C++ notices go straight to descriptor 2; the filter drops exactly those."""
    noise = (
        "E0000 00:00:1795650207.380151 25326 node_def_util.cc:682] NodeDef mentions attribute "
        "use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset; ...>",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1795650194.134185 25326 port.cc:153] oneDNN custom operations are on. ...",
    )
    kept = ("E0000 00:00:1795650207.4 1 some_op.cc:1] a real error", "partial line, no newline")
    code = (
        "import os, sys\n"
        "from pipeline import process\n"
        "process.filter_native_noise()\n"
        f"for line in {[*noise, kept[0]]!r}: os.write(2, (line + '\\n').encode())\n"
        f"os.write(2, {kept[1]!r}.encode())\n"
        "print('from Python', file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # Python's own lines bypass the pipe, so they may come before the native ones
    assert sorted(result.stderr.splitlines()) == sorted([*kept, "from Python"])


@pytest.mark.slow
def test_cli_run_records_and_prints_where(store_uri: str, tmp_path: Path) -> None:
    out = tmp_path / "hydra"
    result = cli(*TINY, "train.verbose=auto", f"hydra.run.dir={out}", "tracking.experiment=cli")
    assert result.returncode == 0, result.stderr[-3000:]
    [found] = _runs(store_uri)
    assert found.info.status == "FINISHED"
    assert "mlflow ui --backend-store-uri" in result.stdout  # Hydra logs to stdout
    assert found.info.run_id in result.stdout
    assert (out / ".hydra" / "config.yaml").exists()
    assert "Deprecat" not in result.stderr + result.stdout
    # quiet: no TensorFlow C++ notices, no colour codes when stdout is not a terminal
    assert "NodeDef" not in result.stderr
    assert "absl::InitializeLog" not in result.stderr
    # (the bars that MLflow's pyfunc check prints while logging the model are another issue's)
    training = result.stdout.split("Restoring model weights")[0]
    assert "Epoch 3/3" in training  # verbose=auto: one plain line per epoch in a pipe
    assert "\x1b[" not in training + result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not SAMPLE_TAR.exists(), reason=f"{SAMPLE_TAR} not found")
def test_cli_trains_on_real_notmnist(store_uri: str, tmp_path: Path) -> None:
    """The default model on the 7,000 real letters of the shared sample (80/10/10 split)."""
    result = cli(
        "data=notmnist", f"data.path={SAMPLE_TAR}", "train.verbose=0", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [found] = _runs(store_uri)
    assert found.data.metrics["test_accuracy"] > 0.85  # measured: 0.89 after 10 epochs
    assert found.data.tags["data.format"] == "tar"
    assert found.data.tags["data.source_digest"] == file_digest(SAMPLE_TAR)
    client = MlflowClient(store_uri)
    listed = {a.path for a in client.list_artifacts(found.info.run_id, "data")}
    assert {"data/card.md", "data/samples.png", "data/skipped_files.csv"} <= listed
    card = Path(client.download_artifacts(found.info.run_id, "data/card.md")).read_text()
    assert "| exact_duplicates_removed       | 124" in card


@pytest.mark.slow
def test_bad_data_fails_in_one_line_and_marks_the_run(store_uri: str, tmp_path: Path) -> None:
    result = cli("data=notmnist", f"data.path={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"data error: data.path={tmp_path / 'nowhere'} does not exist"
    )
    [found] = _runs(store_uri)
    assert found.info.status == "FAILED"


@pytest.mark.slow
def test_nan_loss_fails_the_run_in_one_line(store_uri: str, tmp_path: Path) -> None:
    result = cli(*TINY, "train.learning_rate=5000", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = (
        "training error: val_loss became nan at epoch 1: try a smaller train.learning_rate "
        "(now 5000), or check the data for extreme values"
    )
    assert result.stderr.strip().splitlines()[-1] == line
    [found] = _runs(store_uri)
    assert found.info.status == "FAILED"
    assert found.data.tags["error"] == f"DivergedError: {line.removeprefix('training error: ')}"
    assert len(MlflowClient(store_uri).get_metric_history(found.info.run_id, "loss")) == 1


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_is_marked_killed(
    sig: signal.Signals, store_uri: str, tmp_path: Path
) -> None:
    with running(*ENDLESS, f"hydra.run.dir={tmp_path / 'out'}") as proc:
        run_id = wait_for_epoch(store_uri, proc)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) != 0
    assert MlflowClient(store_uri).get_run(run_id).info.status == "KILLED"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "http://127.0.0.1:9",
            "tracking error: cannot reach http://127.0.0.1:9 (Connection refused",
        ),
        (
            "sqlite:////dev/null/mlflow.db",
            "tracking error: cannot write the tracking store /dev/null",
        ),
    ],
)
def test_unusable_store_fails_in_one_line_fast(uri: str, message: str, tmp_path: Path) -> None:
    started = time.perf_counter()
    result = cli(*TINY, f"tracking.uri={uri}", f"hydra.run.dir={tmp_path / 'out'}")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(message)
    assert time.perf_counter() - started < 60  # start-up included; the store's budget is 15 s


def test_deleted_experiment_fails_in_one_line(store_uri: str, tmp_path: Path) -> None:
    from pipeline.tracking.store.connect import connect

    MlflowClient(store_uri).delete_experiment(connect(store_uri, "gone").experiment_id)
    result = cli(*TINY, "tracking.experiment=gone", f"hydra.run.dir={tmp_path / 'out'}")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("tracking error: MLflow experiment 'gone' is deleted")


def test_sweep_with_an_unreachable_store_fails_in_one_line(tmp_path: Path) -> None:
    result = cli(
        "-m",
        *TINY,
        "tracking.uri=http://127.0.0.1:9",
        "model.dropout_rate=0,0.5",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("tracking error: cannot reach http://127.0.0.1:9")
