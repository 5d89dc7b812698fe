"""Following a registry alias: where it points, read every `poll_seconds`; a new version is
loaded and checked in the background, then swapped in whole.

The swap replaces one reference, which the batcher reads once per forward pass: a request is
answered wholly by the old version or wholly by the new one, and none waits for a load. A
version that fails to load (or that the registry describes with values that are not a
version and a run id) is logged in one line and the current one keeps serving; it is tried
again at the next poll, and logged again only if the reason changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from mlflow.tracking import MlflowClient

from pipeline.serving.versions import Served, checked_run_id, checked_version, load_version
from pipeline.tracking.models.registry import alias_version

log = logging.getLogger(__name__)


class Follower:
    """The version `models:/<name>@<alias>` points at, kept loaded (`current`)."""

    def __init__(
        self,
        client: MlflowClient,
        name: str,
        alias: str,
        load: Callable[[str], Any],
        on_swap: Callable[[Served], None] = lambda served: None,
    ) -> None:
        self.client = client
        self.name = name
        self.alias = alias
        self.uri = f"models:/{name}@{alias}"
        self._load = load
        self._on_swap = on_swap
        self._current: Served | None = None
        self._problem: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current(self) -> Served | None:
        """The version serving now (None until one has loaded)."""
        return self._current

    def poll(self) -> None:
        """Read the alias once; load, check and swap in the version it names if that is not
        the one serving. Never raises: problems are logged."""
        try:
            found = alias_version(self.client, self.name, self.alias)
            if found is None:
                self._report(f"{self.uri} does not exist (no such model or alias)")
                return
            version = checked_version(found.version)
            if self._current is not None and self._current.version == version:
                self._report(None)
                return
            run_id = checked_run_id(found.run_id)
        except Exception as exc:  # the registry unreachable, or what it says is no version
            self._report(f"{self.uri}: {_first_line(exc)}")
            return
        try:
            served = load_version(self.name, version, run_id, self._load)
        except Exception as exc:  # its files, or the network on them: keep serving
            self._report(f"{self.uri}: version {version} failed to load: {_first_line(exc)}")
            return
        before = self._current.version if self._current else "none"
        self._current = served
        self._problem = None
        log.info(
            "serving %s: version %s -> %s (run %s, loaded in %.2f s)",
            self.uri,
            before,
            served.version,
            served.run_id,
            served.load_seconds,
        )
        self._on_swap(served)

    def _report(self, problem: str | None) -> None:
        if problem is not None and problem != self._problem:
            still = f"; still serving version {self._current.version}" if self._current else ""
            log.warning("%s%s", problem, still)
        self._problem = problem

    def start(self, poll_seconds: float) -> None:
        """Poll now, then every `poll_seconds`, in a daemon thread, until `stop`."""

        def run() -> None:
            while not self._stop.is_set():
                self.poll()
                self._stop.wait(poll_seconds)

        self._thread = threading.Thread(target=run, name="alias-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


def _first_line(exc: BaseException) -> str:
    message = str(getattr(exc, "message", None) or exc).strip()
    return message.splitlines()[0] if message else type(exc).__name__
