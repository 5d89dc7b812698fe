"""Where a study lives: Optuna's journal file (with heartbeats) or a database of its own.

The only module of the search that touches Optuna's private API; each use names the upstream
issue whose fix would let it go. Nothing here imports MLflow.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage

# Private: Optuna exports no heartbeat interface; JournalStorage has no heartbeats of its own.
# Goes when JournalStorage takes `heartbeat_interval` like RDBStorage (optuna/optuna#6615;
# its PR #6622 was closed unmerged).
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from pipeline.config import SearchConfig
from pipeline.errors import ConfigError

HEARTBEAT_ATTR = "heartbeat"  # trial system attribute (journal storage): last sign of life
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal file storage with the heartbeats that Optuna gives only its RDB
    storage: the heartbeat is a trial system attribute (seconds since the epoch), so a trial
    whose worker died is found and retried as on PostgreSQL."""

    def __init__(
        self,
        path: Path,
        heartbeat_interval: int,
        grace_period: int,
        stale_callback: StaleCallback | None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_callback = stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    # Private: `fail_stale_trials` asks a BaseHeartbeat storage for this abstract method, and
    # `FrozenTrial._trial_id` is the only way from a trial to its storage id. Both go with
    # heartbeats in JournalStorage itself (optuna/optuna#6615).
    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [
            t._trial_id
            for t in running
            if now - float(t.system_attrs.get(HEARTBEAT_ATTR, now)) > self.grace_period
        ]

    def get_heartbeat_interval(self) -> int:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self.stale_callback


def record_heartbeat(trial: optuna.Trial) -> None:
    """A running trial's sign of life, in its storage (`Trial.storage` is public).

    Private: `Trial._trial_id`, which Optuna made private (optuna/optuna#663) while its
    heartbeats still take a trial id; it goes when ask-and-tell records heartbeats itself
    (optuna/optuna#3293, closed as stale; its PoC #3329 had `study.ask_with_heartbeat()`)."""
    storage = trial.storage
    if isinstance(storage, BaseHeartbeat):
        storage.record_heartbeat(trial._trial_id)


def heartbeat_interval(trial: optuna.Trial) -> int | None:
    """Seconds between a running trial's heartbeats; None when its storage has none."""
    storage = trial.storage
    return storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None


def journal_path(store_uri: str, study: str) -> Path:
    """The default storage: `<folder of the MLflow SQLite store>/optuna/<study>.journal`
    (mlruns/optuna/ by default), else under the project home's mlruns/optuna/."""
    from pipeline.config import project_home

    if store_uri.startswith("sqlite:///"):
        folder = Path(store_uri.removeprefix("sqlite:///")).parent
    else:
        folder = project_home() / "mlruns"
    return folder / "optuna" / f"{study}.journal"


def _sqlalchemy_url(uri: str) -> str:
    """`postgresql://` means psycopg 3 (installed with the postgres extra), not psycopg2."""
    scheme, sep, rest = uri.partition("://")
    return f"postgresql+psycopg{sep}{rest}" if scheme in ("postgresql", "postgres") else uri


def _same_database(a: str, b: str) -> bool:
    def plain(uri: str) -> str:
        scheme, sep, rest = uri.partition("://")
        return f"{scheme.split('+', 1)[0].replace('postgres', 'postgresql', 1)}{sep}{rest}"

    return plain(a).rstrip("/").split("?")[0] == plain(b).rstrip("/").split("?")[0]


def check_storage(storage: str | None, store_uri: str) -> None:
    """Refuse a study storage that is the MLflow store's own database: both keep their schema
    version in an `alembic_version` table, and their migrations would collide."""
    if storage is None:
        return
    if not storage.startswith(("postgresql", "postgres://", "mysql", "sqlite:///")):
        raise ConfigError(
            f"search.storage={storage}: give null (a journal file under mlruns/) or a "
            "database URI such as postgresql://user@host/optuna"
        )
    if _same_database(storage, store_uri):
        raise ConfigError(
            f"search.storage={storage} is the MLflow store's database: give the study a "
            "database of its own (their schema migrations collide)"
        )


def open_storage(
    search: SearchConfig, store_uri: str, stale_callback: StaleCallback
) -> tuple[BaseStorage, str]:
    """The study's storage and the URI of the lock that serialises its workers;
    `stale_callback` gets each trial whose worker died."""
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if search.storage is None:
            path = journal_path(store_uri, search.study)
            storage: BaseStorage = HeartbeatJournalStorage(
                path, search.heartbeat_seconds, search.grace_seconds, stale_callback
            )
            return storage, f"file://{path}"
        storage = RDBStorage(
            _sqlalchemy_url(search.storage),
            heartbeat_interval=search.heartbeat_seconds,
            grace_period=search.grace_seconds,
            heartbeat_stale_trial_callback=stale_callback,
        )
        return storage, search.storage


def storage_label(storage: str | None, lock_uri: str) -> str:
    """Where the study is, for a tag or a message: no password."""
    if storage is None:
        return f"journal {lock_uri.removeprefix('file://')}"
    scheme, _, rest = storage.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
