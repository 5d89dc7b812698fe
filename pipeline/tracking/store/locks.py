"""Locks that every writer of a store respects, and that a dead holder never keeps.

- Beside a local store (SQLite, or any path): an OS file lock (`filelock`, `flock` on Unix),
  which the kernel releases when its holder dies, SIGKILL and power cuts included.
- On PostgreSQL: a session-level advisory lock, released by the server when the holder's
  connection ends, so processes on different machines exclude each other.

The holder writes who it is (host, pid, since when), so that a process that finds the lock
taken can say who holds it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from pipeline.errors import LockedOutError


class LockHeldError(LockedOutError):
    """The lock is taken by another process; `holder` says which, where known."""

    def __init__(self, name: str, holder: dict[str, Any] | None) -> None:
        self.name = name
        self.holder = holder or {}
        who = (
            f"pid {self.holder.get('pid')} on {self.holder.get('host')} "
            f"since {self.holder.get('since')}"
            if self.holder
            else "another process"
        )
        super().__init__(f"lock {name!r} is held by {who}")


def holder_info() -> dict[str, Any]:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


@contextlib.contextmanager
def file_lock(path: Path, name: str, timeout: float = 0) -> Iterator[None]:
    """Hold the lock file `path` (made with its folder if need be). `timeout` 0: fail at once
    with LockHeldError if it is taken; < 0: wait for as long as it takes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = path.with_name(path.name + ".holder")
    lock = FileLock(str(path), timeout=timeout, is_singleton=False)
    try:
        lock.acquire()
    except Timeout:
        raise LockHeldError(name, _read_json(info)) from None
    try:
        info.write_text(json.dumps(holder_info()))
        yield
    finally:
        with contextlib.suppress(OSError):
            info.unlink()
        lock.release()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for `pg_advisory_lock`, from the lock's name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def postgres_lock(dsn: str, name: str, timeout: float = 0) -> Iterator[None]:
    """Hold a PostgreSQL session advisory lock named `name` on the database `dsn` (a
    `postgresql://` URI, SQLAlchemy's `+driver` suffix allowed). The connection is this
    lock's own; the server frees the lock when it closes, however the holder ends."""
    import psycopg

    key = advisory_key(name)
    me = holder_info()
    label = f"notmnist-lock {name} {me['host']}:{me['pid']}"[:63]
    conn = psycopg.connect(
        _plain_dsn(dsn), autocommit=True, application_name=label, connect_timeout=15
    )
    try:
        deadline = None if timeout < 0 else time.monotonic() + timeout
        while True:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if row and row[0]:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise LockHeldError(name, _postgres_holder(conn, key))
            time.sleep(0.5)
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()


def _postgres_holder(conn: Any, key: int) -> dict[str, Any] | None:
    """Who holds the advisory lock `key`: the application name its holder connected with."""
    row = conn.execute(
        "SELECT a.application_name, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
        "AND l.granted AND ((l.classid::bigint << 32) | l.objid::bigint) = %s",
        (key & 0xFFFFFFFFFFFFFFFF,),
    ).fetchone()
    if not row:
        return None
    *_, where = str(row[0]).rpartition(" ")
    host, _, pid = where.rpartition(":")
    return {"host": host, "pid": pid, "since": str(row[1])}


def _plain_dsn(uri: str) -> str:
    """`postgresql+psycopg://...` (SQLAlchemy, as MLflow takes it) -> `postgresql://...`."""
    scheme, sep, rest = uri.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


@contextlib.contextmanager
def store_lock(
    store_uri: str, name: str, timeout: float = 0, lock_uri: str | None = None
) -> Iterator[None]:
    """The lock `name` for a tracking store: an advisory lock on `lock_uri` or on a
    PostgreSQL store, else a file lock beside a local store (`<store folder>/locks/`).
    A remote store (an MLflow server) without `lock_uri` locks on this machine only."""
    target = lock_uri or store_uri
    if target.startswith(("postgresql", "postgres://")):
        with postgres_lock(target, name, timeout):
            yield
        return
    with file_lock(_lock_folder(target) / f"{_safe(name)}.lock", name, timeout):
        yield


def _lock_folder(uri: str) -> Path:
    for prefix in ("sqlite:///", "file://"):
        if uri.startswith(prefix):
            return Path(uri[len(prefix) :]).parent / "locks"
    if "://" not in uri:
        return Path(uri) / "locks"
    # an MLflow server: one lock per server on this machine
    from pipeline.config import project_home

    return project_home() / "mlruns" / "locks" / _safe(uri)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
