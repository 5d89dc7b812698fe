"""Where runs are recorded: the tracking store and the experiment, resolved once per run.

Nothing in `pipeline.tracking` imports TensorFlow, so the sweep callback and the report can
use it cheaply.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig, project_home
from pipeline.names import ExperimentTag
from pipeline.tracking.views import VIEW_KEY, experiment_tags

_SQLITE = "sqlite:///"


@dataclass(frozen=True)
class Store:
    """A resolved tracking store and the experiment runs go to."""

    uri: str
    experiment_id: str
    experiment: str

    def ui_hint(self, run_id: str | None = None) -> str:
        """How to look at a run, or with no run at the experiment's saved comparison view
        (`pipeline.tracking.views`): the server page, or the `mlflow ui` command for a local
        store. `workflowType=machine_learning`: MLflow 3.17's UI otherwise shows the GenAI
        pages (its GenAI / Model training switch overrides the experiment's kind)."""
        page = f"#/experiments/{self.experiment_id}/runs"
        page += f"/{run_id}?" if run_id else f"?viewStateShareKey={VIEW_KEY}&"
        page += "workflowType=machine_learning"
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/{page}"
        return f"mlflow ui --backend-store-uri {self.uri}  # then open http://127.0.0.1:5000/{page}"


def resolve_tracking_uri(uri: str | None, root: Path | None = None) -> str:
    """The default store (SQLite under <home>/mlruns) or `uri` with relative SQLite paths taken
    from the project home (`pipeline.config.project_home`), so Hydra's run folder never
    matters."""
    root = root or project_home()
    if not uri:
        return f"{_SQLITE}{root / 'mlruns' / 'mlflow.db'}"
    if uri.startswith(_SQLITE) and not uri.startswith(_SQLITE + "/"):
        return f"{_SQLITE}{(root / uri[len(_SQLITE) :]).resolve()}"
    if "://" not in uri and not uri.startswith("file:"):
        raise ValueError(
            f"tracking.uri={uri!r} has no scheme: use null (SQLite under mlruns/), "
            "sqlite:///path/to/mlflow.db, or an MLflow server such as http://host:5000"
        )
    return uri


_DATABASES = ("postgresql", "postgres://", "mysql", "mssql")
# How long a process waits for another one creating or upgrading the store's schema
# (seconds of migrations, longer on a loaded machine) before it gives up in one line.
SCHEMA_LOCK_SECONDS = 600.0


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message is one line that says why and what to
    do, printed by the entry points as `tracking error: ...` (exit code 2)."""


def is_database(uri: str) -> bool:
    """A store MLflow keeps in a SQL database (SQLite file or a database server)."""
    return uri.startswith((_SQLITE, *_DATABASES))


def default_artifact_location(uri: str) -> str | None:
    """For a SQLite store, artifacts go beside the database; for a database server
    (PostgreSQL), under the project home's `mlruns/artifacts` (MLflow would take the folder
    the first run happened to start in); an MLflow server chooses its own."""
    if uri.startswith(_SQLITE):
        return (Path(uri[len(_SQLITE) :]).parent / "artifacts").as_uri()
    if uri.startswith(_DATABASES):
        return (project_home() / "mlruns" / "artifacts").as_uri()
    return None


def checkpoint_dir(uri: str, run_id: str) -> Path:
    """Where a run keeps its training checkpoint until it ends: beside a SQLite store, else
    under the project home's `mlruns/checkpoints` (the machine that trains)."""
    root = (
        Path(uri[len(_SQLITE) :]).parent if uri.startswith(_SQLITE) else project_home() / "mlruns"
    )
    return root / "checkpoints" / run_id


def limit_requests(timeout_s: float, retries: int) -> None:
    """Bound every later request MLflow makes to a tracking server: its own defaults retry
    7 times with a doubling backoff, which is 257 s before a dead server is reported."""
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(timeout_s)))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"


def connect(
    uri: str | None,
    experiment: str,
    artifact_location: str | None = None,
    *,
    timeout_s: float = 15.0,
    retries: int = 2,
) -> Store:
    """Point MLflow at the store and make sure the experiment exists (safe under concurrency),
    tagged so that MLflow's UI opens it on the runs table (`pipeline.tracking.views`).

    The first access of a database store creates or checks its schema under the store's
    `schema` lock, so that runs started together on a new store never race on migrations.
    A store that cannot be used raises TrackingError (one line) within `timeout_s`.
    """
    try:
        resolved = resolve_tracking_uri(uri)
    except ValueError as exc:
        raise TrackingError(str(exc)) from None
    limit_requests(timeout_s, retries)
    if resolved.startswith(_SQLITE):
        _check_writable(Path(resolved[len(_SQLITE) :]))
    elif resolved.startswith(("http://", "https://")):
        _check_reachable(resolved, timeout_s, retries)
    mlflow.set_tracking_uri(resolved)
    with _schema_lock(resolved):
        if resolved.startswith(_SQLITE):
            _check_not_half_migrated(Path(resolved[len(_SQLITE) :]))
        try:  # MLflow creates the schema of a new database when it first opens it
            client = MlflowClient(resolved)
            found = client.get_experiment_by_name(experiment)
        except Exception as exc:  # the first access: schema, connection, server errors
            raise _store_error(resolved, exc) from exc
    if is_database(resolved):
        _dispose_engines_at_exit()
    if found is None:
        location = artifact_location or default_artifact_location(resolved)
        try:
            experiment_id = client.create_experiment(
                experiment, artifact_location=location, tags=experiment_tags()
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another job made it first
                raise
            made = client.get_experiment_by_name(experiment)
            if made is None:
                raise
            experiment_id = made.experiment_id
    elif found.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {experiment!r} is deleted in {resolved}: restore it "
            f"(mlflow experiments restore --experiment-id {found.experiment_id}) "
            "or choose another tracking.experiment"
        )
    else:
        experiment_id = found.experiment_id
        # made before the pipeline tagged its experiments, or by hand: tag it now (a kind that
        # someone chose in the UI stays; the saved view is the pipeline's own, kept current)
        for key, value in experiment_tags().items():
            chosen = key == ExperimentTag.KIND and key in found.tags
            if found.tags.get(key) != value and not chosen:
                client.set_experiment_tag(experiment_id, key, value)
    return Store(resolved, experiment_id, experiment)


def open_store(tracking: TrackingConfig, experiment: str | None = None) -> Store:
    """`connect` with a run's `tracking` settings (its time budget included), to
    `experiment` when given instead of `tracking.experiment` (retraining's audit runs)."""
    return connect(
        tracking.uri,
        experiment or tracking.experiment,
        tracking.artifact_location,
        timeout_s=tracking.timeout_seconds,
        retries=tracking.retries,
    )


@contextlib.contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    """The lock every writer takes around its first access of a database store."""
    if not is_database(uri):
        yield
        return
    from pipeline.tracking.locks import LockHeldError, store_lock

    try:
        with store_lock(uri, "schema", timeout=SCHEMA_LOCK_SECONDS):
            yield
    except LockHeldError as exc:
        raise TrackingError(
            f"{uri}: its schema is still being created or upgraded after "
            f"{SCHEMA_LOCK_SECONDS:.0f} s ({exc})"
        ) from None
    except OSError as exc:  # psycopg's OperationalError is not one: see _store_error
        raise TrackingError(f"cannot use the tracking store {uri}: {exc}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            raise _store_error(uri, exc) from None
        raise


def _check_writable(db: Path) -> None:
    """A SQLite store must be writable: MLflow would otherwise retry for minutes."""
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=db.parent):
            pass
        if db.exists():
            with db.open("r+b"):
                pass
    except OSError as exc:
        raise TrackingError(
            f"cannot write the tracking store {db}: {exc.strerror or exc} "
            "(choose a writable place with tracking.uri=sqlite:////path/to/mlflow.db)"
        ) from None


def _check_reachable(uri: str, timeout_s: float, retries: int) -> None:
    """An MLflow server must answer (any HTTP status) within `timeout_s` in all."""
    import requests

    begin = time.monotonic()
    deadline = begin + timeout_s
    error: Exception | None = None
    tries = 0
    for attempt in range(retries + 1):
        tries += 1
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=left)
            return
        except requests.RequestException as exc:
            error = exc
        if attempt < retries:  # back off 0.5 s, 1 s, 2 s, ... within the budget
            time.sleep(min(2.0**attempt / 2, max(0.0, deadline - time.monotonic())))
    reason = _root_cause(error) if error else "no answer"
    raise TrackingError(
        f"cannot reach {uri} ({reason}; {tries} tries in {time.monotonic() - begin:.1f} s): "
        "is the server up? (tracking.timeout_seconds and tracking.retries set the budget)"
    )


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    for arg in exc.args:
        if isinstance(arg, str) and arg:
            return arg.rsplit(": ", 1)[-1][:200]
    return type(exc).__name__


def _check_not_half_migrated(db: Path) -> None:
    """A migration interrupted (or raced) on SQLite leaves `_alembic_tmp_*` tables behind,
    after which MLflow cannot open the store; say so with the repair."""
    if not db.exists() or db.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            leftovers = [
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' "
                    "AND name LIKE '\\_alembic\\_tmp\\_%' ESCAPE '\\'"
                )
            ]
    except sqlite3.Error as exc:
        raise TrackingError(f"cannot read the tracking store {db}: {exc}") from None
    if leftovers:
        drops = "; ".join(f"DROP TABLE {name}" for name in leftovers)
        raise TrackingError(
            f"the tracking store {db} is half-migrated (leftover {', '.join(leftovers)}): "
            f"back it up, then repair it with: sqlite3 {db} '{drops}' && "
            f"mlflow db upgrade sqlite:///{db}"
        )


def _store_error(uri: str, exc: BaseException) -> TrackingError:
    """One line for a store that cannot be opened, with the repair where one is known."""
    text = " ".join(str(exc).split())
    if "out-of-date database schema" in text or "Can't locate revision" in text:
        return TrackingError(
            f"the tracking store {uri} has a schema this MLflow cannot use ({text[:200]}): "
            f"back it up, then run: mlflow db upgrade {uri}"
        )
    return TrackingError(f"cannot use the tracking store {uri}: {text[:300]}")


_disposing: list[bool] = []


def _dispose_engines_at_exit() -> None:
    """Close MLflow's database connections before the interpreter tears them down: psycopg
    otherwise warns "error ignored terminating ... pipeline aborted" at every exit."""
    if _disposing:
        return
    _disposing.append(True)
    atexit.register(dispose_engines)


def dispose_engines() -> None:
    """Close every pooled connection of MLflow's SQL stores in this process."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for engine in list(SqlAlchemyStore._engine_map.values()):
        with contextlib.suppress(Exception):
            engine.dispose()
