"""The recorder's helper process: it makes every MLflow call of a training run.

`python -m pipeline.tracking.recording.writer <fd>` is started by `recorder` and reads its
requests (`protocol`) from the connection on file descriptor `fd`, in order. It imports MLflow
and opens the store while the trainer imports TensorFlow (each on its own core), logs what
is known before training while training runs, renders the figures and logs the model while
the trainer evaluates and exits. See `recorder` for the protocol and the guarantees.

It ignores Ctrl-C and SIGTERM: the trainer receives them too and says how its run ends. If
the trainer dies without saying (SIGKILL, a crash), the connection closes, and the run it
left open is ended KILLED with an `error` tag that says so: never left RUNNING.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, assert_never

from pipeline.tracking.recording.protocol import (
    Asks,
    Close,
    End,
    LogConfig,
    LogData,
    LogEpoch,
    LogEvaluation,
    LogMetrics,
    LogModel,
    LogTraining,
    Open,
    Question,
    Record,
    Request,
    Start,
    Sync,
)

if TYPE_CHECKING:
    from pipeline.tracking.store.location import Store

log = logging.getLogger("pipeline.tracking.recording.writer")


class Writer:
    """Carries out each request (`protocol`) as the MLflow calls of the active run (or the
    store)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.run_id: str | None = None
        self.error: tuple[str, str] | None = None  # the run's first failure: (line, traceback)
        self.model_uri: str | None = None
        self.warm_ups: list[Callable[[], object]] = [_warm_figures, _warm_requirements]

    # -- the loop -----------------------------------------------------------------------------

    def serve(self) -> None:
        while True:
            if not self.connection.poll(0 if self.warm_ups else None):
                self.warm_ups.pop(0)()  # idle: do now what the end of a run would wait for
                continue
            try:
                seq, request = self.connection.recv()
            except (EOFError, OSError):
                self.orphaned()
                return
            if isinstance(request, Close):
                self.connection.send((seq, True, None))
                return
            self.handle(seq, request)

    def handle(self, seq: int, request: object) -> None:
        """Requests whose reply the trainer waits for are answered (result or error); the
        others only report a failure, once, and the run's later requests are skipped."""
        replied = isinstance(request, Asks)
        if self.error is not None and not replied:
            return  # the run failed already: its end says so
        what = request.what if isinstance(request, Request) else type(request).__name__
        begin = time.perf_counter()
        try:
            if not isinstance(request, Question | Record):
                raise TypeError(f"not a request of the run recorder: {request!r:.200}")
            result = self.carry_out(request)
            log.debug("%s: %.3f s", what, time.perf_counter() - begin)
        except Exception as exc:
            line = _one_line(what, exc)
            if not isinstance(request, Open | Sync):
                self.error = self.error or (line, traceback.format_exc())
            self.connection.send((seq, False, line))
            return
        if replied:
            self.connection.send((seq, True, result))

    def carry_out(self, request: Question | Record) -> object:
        """One request, by its type; returns what an answered one is answered with."""
        from pipeline.tracking.recording import records

        match request:
            case Open():
                return self.open(request)
            case Start():
                return self.start(request)
            case Sync():
                return self.error[0] if self.error else None  # the current run's failure
            case End():
                return self.end(request)
            case Close():  # (answered by the loop, which then stops)
                return None
            case LogConfig():
                records.log_config(request.config, request.overrides)
            case LogData():
                records.log_data(request)
            case LogEpoch():
                assert self.run_id is not None
                records.log_epoch(self.run_id, request.step, request.values, request.timestamp_ms)
            case LogTraining():
                records.log_training(request)
            case LogModel():
                from pipeline.tracking.models.classifier import log_model_files

                self.model_uri = log_model_files(request.files)
            case LogEvaluation():
                records.log_evaluation(request)
            case LogMetrics():
                records.log_metrics(request.metrics)
            case _:
                assert_never(request)
        return None

    def orphaned(self) -> None:
        """The trainer went away mid-run: end its run KILLED rather than leave it RUNNING."""
        if self.run_id is None:
            return
        from pipeline.tracking.runs.lifecycle import end_run

        with contextlib.suppress(Exception):
            end_run(
                self.run_id,
                "KILLED",
                "the training process ended without ending its run (killed or crashed)",
            )

    # -- the store and the run's life ---------------------------------------------------------

    def open(self, request: Open) -> Store:
        """Open the store with the trainer's MLflow settings of the moment (its
        `MLFLOW_*` variables: credentials, timeouts), which may differ from this process's
        own, inherited when it started."""
        from pipeline.config import TrackingConfig
        from pipeline.tracking.store.connect import open_store

        for name in [k for k in os.environ if k.startswith("MLFLOW_")]:
            if name not in request.environment:
                del os.environ[name]
        os.environ.update(request.environment)
        return open_store(TrackingConfig.model_validate(request.tracking))

    def start(self, r: Start) -> str:
        from pipeline.tracking.runs.lifecycle import start_run

        self.error, self.model_uri = None, None
        active = start_run(
            r.experiment_id, r.run_name, r.parent_run_id, r.tags, r.resume_run_id, r.start_ms
        )
        self.run_id = active.info.run_id
        return self.run_id

    def end(self, r: End) -> dict[str, Any]:
        """End the run as the trainer says, or FAILED with this process's own error if one
        of its requests failed. Returns how it ended."""
        from pipeline.tracking.runs.lifecycle import end_run

        status, message, trace, tags = r.status, r.message, r.trace, r.tags
        if self.run_id is None:  # it never started: its start's failure said why
            message = self.error[0] if self.error else message
            return {"run_id": None, "status": "FAILED", "error": message, "model_uri": None}
        if self.error is not None and status in {"FINISHED", "FAILED"}:
            status, (message, trace) = "FAILED", self.error
        run_id, self.run_id = self.run_id, None
        end_run(run_id, status, message, trace, tags)
        return {"run_id": run_id, "status": status, "error": message, "model_uri": self.model_uri}


def _one_line(what: str, exc: BaseException) -> str:
    from pipeline.tracking.store.connect import TrackingError

    if isinstance(exc, TrackingError):
        return str(exc)
    return f"recording the run ({what}) failed: {type(exc).__name__}: {exc}".splitlines()[0]


def _warm_figures() -> None:
    """Draw and save a small figure: the first one in a process imports matplotlib and loads
    its fonts and the Agg renderer (about a second), which the data card and the end
    figures would otherwise wait for."""
    import io

    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label="x")
    ax.imshow(np.zeros((2, 2)), cmap="Blues")
    ax.set_title("warm-up")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png")


def _warm_requirements() -> None:
    """MLflow's map of installed packages, which every model log checks its requirements
    against (a scan of all of site-packages, cached for the process)."""
    with contextlib.suppress(Exception):  # an MLflow internal: a missing one only costs time
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()  # type: ignore[no-untyped-call]


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="[recorder] %(levelname)s %(message)s")
    if os.environ.get("PIPELINE_RECORDER_DEBUG"):  # each request's time, for profiling
        log.setLevel(logging.DEBUG)
    connection = Connection(int(argv[1]))
    begin = time.perf_counter()
    import mlflow  # noqa: F401 - while the trainer imports TensorFlow

    log.debug("MLflow imported in %.2f s", time.perf_counter() - begin)
    Writer(connection).serve()
    # Every run is ended and written: exit as the trainer does, without the teardown of
    # MLflow's, SQLAlchemy's and matplotlib's modules (whoever reads this process's output
    # through a pipe waits for it to close).
    from pipeline.process import exit_now

    exit_now(0)


if __name__ == "__main__":
    main(sys.argv)
