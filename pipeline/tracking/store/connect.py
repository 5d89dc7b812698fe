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
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig, project_home
from pipeline.names import ExperimentTag
from pipeline.tracking.store.location import SQLITE, store_uri
from pipeline.tracking.store.location import Store as Store  # re-exported
from pipeline.tracking.store.location import TrackingError as TrackingError  # re-exported
from pipeline.tracking.store.location import (
    resolve_tracking_uri as resolve_tracking_uri,
)  # re-exported
from pipeline.tracking.store.views import experiment_tags

_SQLITE = SQLITE


_DATABASES = ("postgresql", "postgres://", "mysql", "mssql")
# How long a process waits for another one creating or upgrading the store's schema
# (seconds of migrations, longer on a loaded machine) before it gives up in one line.
SCHEMA_LOCK_SECONDS = 600.0


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
    tagged so that MLflow's UI opens it on the runs table (`pipeline.tracking.store.views`).

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
            _new_sqlite_schema(Path(resolved[len(_SQLITE) :]))
        client, found = _first_access(resolved, experiment)
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


# What a database store says while another client, which does not take our schema lock (a
# notebook's MlflowClient, `mlflow ui`), creates or upgrades its schema at the same moment:
# MLflow checks that the tables exist, then creates them, with nothing to stop two clients
# doing both; and a schema half-way through its migrations reads as out of date.
_SCHEMA_RACE = ("already exists", "duplicate", "uniqueviolation", "no such table", "locked")
# ... and what it looks like mid-way, which an old or interrupted schema looks like too
_MID_MIGRATION = ("out-of-date database schema",)
# How long a run waits for such a client to finish making the schema (seconds of migrations),
# and for a schema that looks mid-way (leftover `_alembic_tmp_*` tables, an old version) to
# become current before it is called half-migrated or out of date (a step takes milliseconds).
SCHEMA_RACE_SECONDS = 120.0
MID_MIGRATION_SECONDS = 5.0


def _new_sqlite_schema(db: Path) -> None:
    """A new SQLite store gets its whole schema made in a file of its own first, then put in
    place by a hard link, which fails if the store appeared meanwhile. Another client opening
    the same new store at the same moment then finds no file (and makes the schema itself,
    which `_first_access` waits for) or a complete schema: never one that two clients are
    migrating at once, which can leave it broken (`_alembic_tmp_*` tables, a version row that
    no longer matches)."""
    if db.exists():
        return
    fresh = db.with_name(f".{db.name}.{os.getpid()}.new")
    uri = f"{_SQLITE}{fresh}"
    try:
        MlflowClient(uri).search_experiments()  # MLflow makes the schema
        _dispose_engine(uri)
        with contextlib.suppress(FileExistsError):  # another client made the store first
            os.link(fresh, db)
    except Exception as exc:
        raise _store_error(f"{_SQLITE}{db}", exc) from exc
    finally:
        fresh.unlink(missing_ok=True)


def _dispose_engine(uri: str) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = SqlAlchemyStore._engine_map.pop(uri, None)
    if engine is not None:
        engine.dispose()


def _first_access(uri: str, experiment: str) -> tuple[MlflowClient, Any]:
    """The client and `experiment` (None if it does not exist yet), on the first access of the
    store, which creates a new database's schema. Losing a race for the schema to another
    client is waited out (it makes the same schema); any other failure is one line."""
    begin = time.monotonic()
    pause = 0.2
    while True:
        try:
            if uri.startswith(_SQLITE):
                _check_not_half_migrated(Path(uri[len(_SQLITE) :]))
            client = MlflowClient(uri)  # MLflow makes a new database's schema here
            return client, client.get_experiment_by_name(experiment)
        except HalfMigratedError:
            if time.monotonic() - begin > MID_MIGRATION_SECONDS:
                raise
        except Exception as exc:  # the first access: schema, connection, server errors
            text, waited = str(exc).lower(), time.monotonic() - begin
            raced = any(sign in text for sign in _SCHEMA_RACE) and waited < SCHEMA_RACE_SECONDS
            mid = any(sign in text for sign in _MID_MIGRATION) and waited < MID_MIGRATION_SECONDS
            if not (raced or mid):
                raise _store_error(uri, exc) from exc
        time.sleep(pause)
        pause = min(2.0, pause * 2)


def reach(given: str | None, timeout_s: float = 15.0, retries: int = 2) -> str:
    """The store a command reads (`location.store_uri`), with every request to a server
    bounded as a run's are: a server that does not answer is a one-line TrackingError
    within `timeout_s`, not MLflow's minutes of retries."""
    uri = store_uri(given)
    if uri.startswith(("http://", "https://")):
        limit_requests(timeout_s, retries)
        _check_reachable(uri, timeout_s, retries)
    return uri


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
    from pipeline.tracking.store.locks import LockHeldError, store_lock

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


class HalfMigratedError(TrackingError):
    """Leftover `_alembic_tmp_*` tables: an interrupted migration (or one still running)."""


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
        raise HalfMigratedError(
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
