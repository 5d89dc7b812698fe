"""A training run's MLflow calls, made by a helper process while this one trains.

Why a process: importing MLflow and opening its store cost seconds of Python, as does
importing TensorFlow, and on a small machine each runs on one core. In one process they
queue behind each other (threads do not help: both hold the interpreter lock); in two, they
overlap. So a trainer starts the helper (`pipeline.tracking.recording.writer`) first, sends it each
thing to record as soon as it is known (a typed request, `protocol`), and never imports MLflow
itself: params and data card are logged while training runs, the figures and the model while
the trainer moves on.

The guarantees are those of a run logged in-process:
- requests are carried out in the order they were sent, each run's in its own MLflow run;
- a run ends FINISHED, FAILED (with its traceback, ours or the helper's) or KILLED; a
  failed request fails the run, and the trainer hears of it at the next epoch's end or when
  the run ends;
- `RecordedRun.end(wait=True)` (the default) returns once everything is in the store: the
  run ended, the model loadable. A sweep in one process may let its jobs' runs end in the
  background (`wait=False`) and `drain()` before its report;
- if the trainer dies, the helper ends the run KILLED (see `writer`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast, overload

import pipeline
from pipeline.config import TrackingConfig
from pipeline.names import Tag
from pipeline.tracking.recording.protocol import (
    Asks,
    Close,
    End,
    LogEpoch,
    Open,
    Record,
    Request,
    Start,
    Sync,
)
from pipeline.tracking.runs.lifecycle import OpenRun
from pipeline.tracking.runs.processes import process_tags
from pipeline.tracking.store.location import Store, TrackingError, resolve_tracking_uri

log = logging.getLogger(__name__)
R = TypeVar("R")


@dataclass(frozen=True)
class Ticket(Generic[R]):
    """A sent request whose answer, an `R`, `Recorder.reply` waits for."""

    seq: int


class Recorder:
    """The connection to one helper process, which outlives runs: a sweep's jobs and a
    search's trials in one process share its imports and store connection."""

    def __init__(self) -> None:
        mine, theirs = multiprocessing.Pipe(duplex=True)
        env = dict(os.environ)
        # the helper imports the very `pipeline` this process runs, wherever it came from
        source = str(Path(pipeline.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.tracking.recording.writer", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # it says nothing there; its warnings go to stderr
            stderr=_python_stderr(),
            env=env,
        )
        theirs.close()
        self.connection = mine
        self.sequence = itertools.count(1)
        self.sending = threading.Lock()  # one request's bytes at a time on the connection
        self.sent = 0
        self.awaited: set[int] = set()  # requests whose answer someone will ask for
        self.replies: dict[int, tuple[bool, Any]] = {}
        self.run_begins = 0  # the first request of the current run
        self.failure: str | None = None  # a failed request of the current run, in one line
        self.opening: dict[str, Ticket[Store]] = {}  # open requests, by tracking settings
        self.opened: dict[str, Store] = {}
        self.pending_ends: list[Ticket[dict[str, Any]]] = []
        self.last_run_id: str | None = None

    def alive(self) -> bool:
        return self.process.poll() is None and not self.connection.closed

    # -- the wire ---------------------------------------------------------------------------

    @overload
    def send(self, request: Asks[R]) -> Ticket[R]: ...
    @overload
    def send(self, request: Record) -> None: ...
    def send(self, request: Request) -> Ticket[Any] | None:
        """Send one request; an answered one gives the ticket to wait for its answer with.
        (Any thread may send: a run's data record is made in one while it trains.)"""
        asks = isinstance(request, Asks)
        with self.sending:
            seq = next(self.sequence)
            self.sent += 1
            if asks:
                self.awaited.add(seq)
            try:
                self.connection.send((seq, request))
            except OSError as exc:
                raise TrackingError(f"the run recorder process is gone ({exc})") from None
        return Ticket(seq) if asks else None

    def reply(self, ticket: Ticket[R]) -> R:
        """Wait for the answer to a request; its error is raised as TrackingError."""
        seq = ticket.seq
        while seq not in self.replies:
            self._receive()
        self.awaited.discard(seq)
        ok, payload = self.replies.pop(seq)
        if not ok:
            raise TrackingError(payload)
        return cast(R, payload)

    def check(self) -> None:
        """Raise the current run's failed request, if the helper reported one."""
        while self.connection.poll():
            self._receive()
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise TrackingError(failure)

    def _receive(self) -> None:
        try:
            seq, ok, payload = self.connection.recv()
        except (EOFError, OSError):
            code = self.process.wait()
            raise TrackingError(f"the run recorder process died (exit code {code})") from None
        if seq in self.awaited:
            self.replies[seq] = (ok, payload)
        elif seq >= self.run_begins:  # unanswered requests only report failing, once
            self.failure = self.failure or payload
        # (an earlier run's failure: that run ended FAILED with it, in the helper)

    # -- the store and runs -----------------------------------------------------------------

    def request_store(self, tracking: TrackingConfig) -> None:
        """Ask for the store now (the helper opens it while this process goes on). Its URI is
        resolved here, where the project home and the environment are the run's own."""
        tracking = _resolved(tracking)
        key = _key(tracking)
        if key not in self.opening and key not in self.opened:
            self.opening[key] = self.send(Open(tracking.model_dump(mode="json"), _mlflow_env()))

    def store(self, tracking: TrackingConfig) -> Store:
        """The store `tracking` names, opened by the helper (TrackingError if unusable)."""
        self.request_store(tracking)
        key = _key(_resolved(tracking))
        if key not in self.opened:
            ticket = self.opening.pop(key)  # a failure is not kept: the next run asks again
            self.opened[key] = self.reply(ticket)
        return self.opened[key]

    def start(
        self,
        store: Store,
        run_name: str | None,
        parent_run_id: str | None,
        tags: dict[str, str],
        resume_run_id: str | None,
        start_ms: int,
    ) -> Ticket[str]:
        """Start a run: its requests are those sent from now on."""
        while self.connection.poll():  # an earlier run's news: that run's end said it
            self._receive()
        request = Start(store.experiment_id, run_name, parent_run_id, tags, resume_run_id, start_ms)
        ticket = self.send(request)
        self.run_begins, self.failure = ticket.seq, None
        return ticket

    def sync(self) -> None:
        """Wait until the helper has carried out every request sent so far; raise the current
        run's failure, if any."""
        error = self.reply(self.send(Sync()))
        self.check()
        if error is not None:
            raise TrackingError(error)

    def drain(self) -> None:
        """Wait for every run ended without waiting (`wait=False`); say which failed."""
        for ticket in list(self.pending_ends):
            self.pending_ends.remove(ticket)
            try:
                outcome = self.reply(ticket)
            except TrackingError as exc:
                log.error("A run could not be ended: %s", exc)
                continue
            if outcome["status"] == "FAILED" and outcome["error"]:
                log.error("Run %s failed: %s", outcome["run_id"], outcome["error"])

    def close(self) -> None:
        """Drain, then let the helper go once it says every run is ended and written (it
        exits on its own; nothing of ours waits for its interpreter's teardown). A helper
        that was never asked anything (`--help`) is stopped at once."""
        if not self.alive():
            return
        if self.sent == 0:
            self.process.kill()
            self.process.wait()
        else:
            with contextlib.suppress(TrackingError):
                self.drain()
                self.reply(self.send(Close()))
        self.connection.close()


def _resolved(tracking: TrackingConfig) -> TrackingConfig:
    try:
        uri = resolve_tracking_uri(tracking.uri)
    except ValueError as exc:
        raise TrackingError(str(exc)) from None
    return tracking.model_copy(update={"uri": uri})


def _mlflow_env() -> dict[str, str]:
    """This process's MLflow settings now (credentials, timeouts...): the helper, started
    earlier, opens the store with these, as this process would."""
    return {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}


_STORE_FIELDS = {"uri", "experiment", "artifact_location", "timeout_seconds", "retries"}


def _key(tracking: TrackingConfig) -> str:
    """The settings that make a store (not the run's name, which a sweep's jobs vary): one
    opened for them serves again while the MLflow settings are the same too."""
    fields = tracking.model_dump(mode="json", include=_STORE_FIELDS)
    return repr(sorted(fields.items())) + repr(sorted(_mlflow_env().items()))


def _python_stderr() -> int | None:
    """Python's own standard error, for the helper's messages: an entry point may have made
    descriptor 2 a filtering pipe (`pipeline.process.filter_native_noise`) that must close."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # captured (a test runner): inherit
        return None


class RecordedRun:
    """The trainer's handle on one run that the helper records."""

    def __init__(self, recorder: Recorder, started: Ticket[str]) -> None:
        self.recorder = recorder
        self._start = started
        self._run_id: str | None = None
        self.outcome: dict[str, Any] | None = None

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            self._run_id = self.recorder.reply(self._start)
            self.recorder.last_run_id = self._run_id
        return self._run_id

    def log(self, record: Record) -> None:
        """One record of this run (`protocol.LogConfig`, `LogData`...), carried out in order
        while this process goes on."""
        self.recorder.send(record)

    def log_epoch(self, step: int, values: Mapping[str, float], time_ms: int | None = None) -> None:
        """One epoch's values, at `time_ms` (when it ended, if not now)."""
        stamp = int(time.time() * 1000) if time_ms is None else time_ms
        self.recorder.send(LogEpoch(step, dict(values), stamp))
        self.recorder.check()

    def end(
        self,
        status: str,
        message: str | None = None,
        trace: str | None = None,
        tags: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> None:
        ticket = self.recorder.send(End(status, message, trace, dict(tags or {})))
        # a failure of this run's requests is the end's to say: none is raised later
        self.recorder.failure, self.recorder.run_begins = None, ticket.seq + 1
        if not wait:
            self.recorder.pending_ends.append(ticket)
            return
        self.outcome = self.recorder.reply(ticket)
        if self.outcome["run_id"]:
            self._run_id = self.recorder.last_run_id = self.outcome["run_id"]
        if status == "FINISHED" and self.outcome["status"] != "FINISHED":
            raise TrackingError(self.outcome["error"] or "the run could not be recorded")


_recorder: Recorder | None = None


def recorder() -> Recorder:
    """This process's recorder, its helper started on first use (or again, if it died)."""
    global _recorder
    if _recorder is None or not _recorder.alive():
        if _recorder is not None:
            _recorder.connection.close()
        _recorder = Recorder()
    return _recorder


def close() -> None:
    """End this process's recorder, if it has one (its runs recorded first)."""
    global _recorder
    if _recorder is not None:
        _recorder.close()
        _recorder = None


def drain() -> None:
    """Wait until every run this process started is recorded and ended (a sweep's report
    needs them all); nothing to do without a recorder."""
    if _recorder is not None and _recorder.alive():
        _recorder.drain()


def last_run_id() -> str | None:
    """The id of the run this process recorded last (as `mlflow.last_active_run`)."""
    return None if _recorder is None else _recorder.last_run_id


@contextlib.contextmanager
def recorded_run(
    store: Store,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    resume_run_id: str | None = None,
    *,
    wait: bool = True,
) -> Iterator[RecordedRun]:
    """A run recorded by the helper, which always ends: FINISHED, FAILED on an exception (with
    its traceback), KILLED on Ctrl-C or SIGTERM, or as an `EndRun` says (`lifecycle.OpenRun`).

    The run starts now (its start time is this moment, whenever the helper gets to it) and
    carries this process's host and pid, so the stale-runs check looks at the trainer.
    `wait=False` lets a successful run end in the background (`Recorder.drain`)."""
    rec = recorder()
    all_tags = {**process_tags(), **_program_tags(), **(tags or {})}
    start_ms = int(time.time() * 1000)
    run = RecordedRun(
        rec, rec.start(store, run_name, parent_run_id, all_tags, resume_run_id, start_ms)
    )
    with OpenRun(functools.partial(_end, run, wait)):
        yield run
        rec.check()  # a failed request fails the run, even after the last epoch


def _program_tags() -> dict[str, str]:
    """What MLflow records of the program that starts a run in-process (its script and
    kind), which the helper would otherwise give as its own. (Its user, MLflow's account
    name or the login, is the same in the helper, which has this process's MLflow
    settings.)"""
    program = sys.argv[0] if sys.argv and sys.argv[0] not in {"", "-c"} else "<console>"
    return {Tag.SOURCE_NAME: program, Tag.SOURCE_TYPE: "LOCAL"}


def _end(
    run: RecordedRun,
    wait: bool,
    status: str,
    message: str | None,
    trace: str | None,
    tags: Mapping[str, str] | None,
) -> None:
    """End the run: FINISHED as `wait` says (a failure to record it is raised); on an
    exception quietly, since that exception, not a failure to record the end, is what the
    caller sees (the failure is logged)."""
    if status == "FINISHED":
        run.end(status, message, trace, tags, wait=wait)
        return
    try:
        run.end(status, message, trace, tags)
    except TrackingError as exc:
        log.error("The run could not be ended: %s", exc)
