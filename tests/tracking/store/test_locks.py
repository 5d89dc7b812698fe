"""Locks: one holder at a time, the holder named, and free again when the holder dies."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.tracking.store.locks import LockHeldError, store_lock

_HOLD = """
import sys, time
from pipeline.tracking.store.locks import store_lock
with store_lock(sys.argv[1], "retrain-notmnist"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(uri: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, uri], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def _lock_dies_with_its_holder(uri: str) -> None:
    proc = _holder(uri)
    try:
        with (
            pytest.raises(LockHeldError, match=f"pid {proc.pid} ") as held,
            store_lock(uri, "retrain-notmnist"),
        ):
            pass
        assert held.value.holder["pid"] in (proc.pid, str(proc.pid))
        with store_lock(uri, "another-name"):  # other names are independent
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while True:  # the kernel or the server frees it; no clean-up ran
        try:
            with store_lock(uri, "retrain-notmnist"):
                return
        except LockHeldError:
            assert time.monotonic() < deadline, "lock still held after its holder died"
            time.sleep(0.2)


def test_file_lock_beside_a_sqlite_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    _lock_dies_with_its_holder(uri)
    assert (tmp_path / "mlruns" / "locks" / "retrain-notmnist.lock").exists()


def test_waiting_for_a_lock_gives_up_after_its_timeout(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = _holder(uri)
    try:
        start = time.monotonic()
        with pytest.raises(LockHeldError), store_lock(uri, "retrain-notmnist", timeout=1):
            pass
        assert 0.9 < time.monotonic() - start < 5
    finally:
        proc.kill()
        proc.wait()


def test_advisory_lock_on_postgres(postgres_db: str) -> None:
    _lock_dies_with_its_holder(postgres_db)
