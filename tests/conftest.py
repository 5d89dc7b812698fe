"""Shared fixtures: Hydra compose, tiny configs, and a throw-away MLflow store per test."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from pipeline import process
from pipeline.config import AppConfig, config_dir, validate

process.configure()  # the environment every entry point sets (tests are an entry point)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = config_dir()
SHARED_SAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "notmnist-sample"

# Small enough for a few seconds per run, big enough for every class in every split.
TINY = (
    "data.train_size=400",
    "data.valid_size=100",
    "data.test_size=100",
    "model.hidden_units=[32]",
    "train.epochs=3",
    "train.batch_size=64",
    "train.verbose=0",
)
# The same, training until it is interrupted.
ENDLESS = (*TINY, "train.epochs=100000", "train.early_stopping.enabled=false")


# The folder the commands of the running test start in: its own tmp_path/cwd (set by
# `_isolated_store` in this variable, as tests import this file as a module of their own), so
# that Hydra's outputs/ and multirun/ (relative to where a command starts) land there, not in
# the checkout that parallel workers share. The code and its project home are still the
# checkout's (`project_home()` does not depend on the folder).
_CWD = "PIPELINE_TEST_CWD"


def workdir() -> Path:
    """Where this test's commands start: its own folder (see `_CWD`); a module's or the
    session's fixtures, set up before any test's folder, start theirs in this process's."""
    return Path(os.environ.get(_CWD) or _process_workdir())


@functools.cache
def _process_workdir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="notmnist-tests-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline args...` (`notmnist args...`), as a user runs it: the command
    first (`cli("reproduce", run_id)`), none to train; from the test's own folder (`cwd`:
    another, such as a copy of the project)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd or workdir(),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# What a command must not print (its output a file): TensorFlow's C++ and absl notices, MLflow's
# download bar and INFO lines, progress bars (carriage returns), tracebacks.
NOISE = (
    "I0000 ",
    "E0000 ",
    "W0000 ",
    "absl::InitializeLog",
    "oneDNN custom operations",
    "Downloading artifacts",
    "Validating input example",
    "Creating initial MLflow database tables",
    "\r",
    "Traceback (most recent call last)",
)


def assert_quiet(result: subprocess.CompletedProcess[str]) -> None:
    """A command's output holds none of `NOISE`."""
    for text in (result.stdout, result.stderr):
        for noise in NOISE:
            assert noise not in text, f"{noise!r} in:\n{text[-3000:]}"


@contextlib.contextmanager
def running(*args: str) -> Iterator[subprocess.Popen[str]]:
    """`python -m pipeline args...` in the background, for tests that interrupt it; killed
    at the end of the block if it is still running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=workdir(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.communicate()


def wait_for_epoch(store_uri: str, proc: subprocess.Popen[str], timeout: float = 180) -> str:
    """The id of the first run in the store that has logged an epoch, while `proc` runs."""
    from mlflow.tracking import MlflowClient

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if Path(store_uri.removeprefix("sqlite:///")).exists():
            client = MlflowClient(store_uri)
            ids = [e.experiment_id for e in client.search_experiments()]
            for run in client.search_runs(ids, "metrics.loss >= 0"):
                return run.info.run_id
        time.sleep(0.5)
    raise TimeoutError("no run logged an epoch")


def compose_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def settings(*overrides: str) -> AppConfig:
    return validate(OmegaConf.to_container(compose_config(*overrides), resolve=True))


# The stages take every setting keyword-only, with no defaults of their own: these fill in the
# composed default config's (conf/), through the same mapping a run uses
# (pipeline.jobs.training), so that a test names only the values it is about.


@functools.cache
def defaults(*overrides: str) -> AppConfig:
    """The composed default config (with `overrides`), validated; composed once per process."""
    return settings(*overrides)


def model_args(**given: Any) -> dict[str, Any]:
    """`build_model`'s arguments: the default config's, for 28x28 images of A-J, and `given`."""
    from pipeline.jobs.training import model_arguments
    from pipeline.stages.data import CLASSES, IMAGE_SHAPE

    return {**model_arguments(defaults(), len(CLASSES), IMAGE_SHAPE), **given}


def new_model(**given: Any) -> Any:
    """`build_model(...)` with the default config's values, and `given`."""
    from pipeline.stages.model import build_model

    return build_model(**model_args(**given))


def new_optimizer(**given: Any) -> Any:
    """`make_optimizer(...)` with the default config's values (plain SGD, 0.1), and `given`."""
    from pipeline.jobs.training import optimizer_arguments
    from pipeline.stages.train import make_optimizer

    return make_optimizer(**{**optimizer_arguments(defaults().train), **given})


def compiled(model: Any, **given: Any) -> Any:
    """`model` compiled as a default run compiles it (`optimizer=` and the rest may be given)."""
    from pipeline.stages.train import compile_model

    settings_ = {"steps_per_execution": defaults().train.steps_per_execution, **given}
    settings_.setdefault("optimizer", new_optimizer())
    compile_model(model, **settings_)
    return model


def fit_args(**given: Any) -> dict[str, Any]:
    """`fit`'s settings from the default config (early stopping on val_loss, patience 3...)."""
    from pipeline.jobs.training import fit_arguments

    return {**fit_arguments(defaults().train), **given}


def synthetic_args(**given: Any) -> dict[str, Any]:
    """`load_synthetic`'s arguments: conf/data/synthetic.yaml's, and `given`."""
    return {**defaults().data.model_dump(exclude={"source"}), **given}


def notmnist_args(path: str | Path | None, **given: Any) -> dict[str, Any]:
    """`load_notmnist`'s arguments: conf/data/notmnist.yaml's for `path`, and `given`."""
    data = defaults("data=notmnist", "data.path=any").data.model_dump(exclude={"source"})
    return {**data, "path": None if path is None else str(path), **given}


def rendered(n: int, **given: Any) -> tuple[Any, Any]:
    """`render_letters(n, seed=..., fonts=..., ...)` with conf/data/synthetic.yaml's
    distortions where `given` names none."""
    from pipeline.config.schema import SyntheticDataConfig
    from pipeline.stages.data.synthetic import render_letters

    data = defaults().data
    assert isinstance(data, SyntheticDataConfig)
    return render_letters(n, **{**data.distortions(), **given})


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema made once (migrations take ~2 s)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _empty_store: Path) -> None:
    """Every test tracks into its own SQLite file, caches data in its own folder and starts
    its commands in its own folder: never the project's mlruns/, .cache/ or outputs/ (tests
    run in parallel, `make test`)."""
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_empty_store, db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.setenv(_CWD, str(tmp_path / "cwd"))


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


@pytest.fixture
def tiny() -> Callable[..., AppConfig]:
    """`tiny("model=logreg")`: the default config shrunk to seconds, plus overrides."""
    return lambda *overrides: settings(*TINY, *overrides)


PG = "postgresql://postgres@127.0.0.1:5432"


def postgres_up() -> bool:
    """True when the local PostgreSQL answers; starts it first if it is down (as this
    machine's services are started)."""
    try:
        import psycopg
    except ImportError:
        return False
    for attempt in range(2):
        try:
            psycopg.connect(f"{PG}/postgres", connect_timeout=3).close()
            return True
        except psycopg.OperationalError:
            if attempt == 0:
                subprocess.run(
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
                    shell=True,
                    capture_output=True,
                    timeout=60,
                )
                time.sleep(2)
    return False


@pytest.fixture
def postgres_db() -> Iterator[str]:
    """A throw-away PostgreSQL database (its URI), dropped after the test."""
    if not postgres_up():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import uuid

    import psycopg

    name = f"notmnist_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG}/{name}"
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# The registered model that the prediction, serving and reproduction tests share, trained once
# per session (tests/models_fixture.py); imported here so that every module gets the same one.
from models_fixture import champion  # noqa: E402, F401


@contextlib.contextmanager
def fluent_run(store: Any, tags: dict[str, str] | None = None) -> Iterator[Any]:
    """The active run as the recorder's helper opens and ends it (`start_run`, then
    `end_run` through `OpenRun`): FINISHED after the block, FAILED on an error."""
    from pipeline.tracking.runs.lifecycle import OpenRun, end_run, start_run

    active = start_run(store.experiment_id, tags=tags)
    with OpenRun(functools.partial(end_run, active.info.run_id)):
        yield active


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(
    args: Sequence[str], uri: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`mlflow <args>` (a tracking server) from this venv, its output in `log`; yields once
    `<uri>/health` answers, and stops it at the end of the block."""
    import urllib.request

    # The pipeline submits no server jobs (MLflow's GenAI scorers, trace roll-ups): without
    # this each server starts a job runner and seven task queues that compete for the cores.
    env = {**(os.environ if env is None else env), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"MLflow server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
