"""The recorder's helper process: it makes every MLflow call of a training run.

`python -m pipeline.tracking.recording.writer <fd>` is started by `recorder` and reads its
requests from the connection on file descriptor `fd`, in order. It imports MLflow
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
from typing import Any

from pipeline.tracking.recording.recorder import ANSWERED

log = logging.getLogger("pipeline.tracking.recording.writer")


class Writer:
    """The requests, by name: each one an MLflow call of the active run (or the store)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.run_id: str | None = None
        self.dataset: Any = None  # the run's data, sent once, for the card and the figures
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
                seq, op, args = self.connection.recv()
            except (EOFError, OSError):
                self.orphaned()
                return
            if op == "close":
                self.connection.send((seq, True, None))
                return
            self.handle(seq, op, args)

    def handle(self, seq: int, op: str, args: tuple[Any, ...]) -> None:
        """Requests whose reply the trainer waits for are answered (result or error); the
        others only report a failure, once, and the run's later requests are skipped."""
        method = getattr(self, f"op_{op}")
        replied = op in ANSWERED
        if self.error is not None and not replied:
            return  # the run failed already: its end says so
        begin = time.perf_counter()
        try:
            result = method(*args)
            log.debug("%s: %.3f s", op, time.perf_counter() - begin)
        except Exception as exc:
            line = _one_line(op, exc)
            if op not in {"open", "sync"}:
                self.error = self.error or (line, traceback.format_exc())
            self.connection.send((seq, False, line))
            return
        if replied:
            self.connection.send((seq, True, result))

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

    # -- the requests -------------------------------------------------------------------------

    def op_open(self, tracking: dict[str, Any], environment: dict[str, str]) -> Any:
        """Open the store with the trainer's MLflow settings of the moment (its
        `MLFLOW_*` variables: credentials, timeouts), which may differ from this process's
        own, inherited when it started."""
        from pipeline.config import TrackingConfig
        from pipeline.tracking.store.connect import open_store

        for name in [k for k in os.environ if k.startswith("MLFLOW_")]:
            if name not in environment:
                del os.environ[name]
        os.environ.update(environment)
        return open_store(TrackingConfig.model_validate(tracking))

    def op_start(
        self,
        experiment_id: str,
        run_name: str | None,
        parent_run_id: str | None,
        tags: dict[str, str],
        resume_run_id: str | None,
        start_ms: int,
    ) -> str:
        from pipeline.tracking.runs.lifecycle import start_run

        self.error, self.dataset, self.model_uri = None, None, None
        active = start_run(experiment_id, run_name, parent_run_id, tags, resume_run_id, start_ms)
        self.run_id = active.info.run_id
        return self.run_id

    def op_sync(self) -> str | None:
        """The current run's failure, in one line, if a request of it failed."""
        return self.error[0] if self.error else None

    def op_config(self, config: dict[str, Any], overrides: list[str]) -> None:
        from pipeline.tracking.recording.records import log_config

        log_config(config, overrides)

    def op_dataset(self, dataset: Any, new: bool = True) -> None:
        """The run's data, for its end figures; its identity and card are logged once, when
        the run is `new` (a resumed run logged them before)."""
        from pipeline.tracking.recording.records import log_dataset

        self.dataset = dataset
        if new:
            log_dataset(dataset)

    def op_epoch(self, step: int, values: dict[str, float], timestamp_ms: int) -> None:
        from pipeline.tracking.recording.records import log_epoch

        assert self.run_id is not None
        log_epoch(self.run_id, step, values, timestamp_ms)

    def op_metrics(self, metrics: dict[str, float]) -> None:
        from pipeline.tracking.recording.records import log_metrics

        log_metrics(metrics)

    def op_training(self, history: Any, best_epoch: int, stopped_early: bool) -> None:
        from pipeline.tracking.recording.records import log_training

        log_training(history, best_epoch, stopped_early)

    def op_evaluation(self, metrics: dict[str, float], evaluation: dict[str, Any]) -> None:
        from pipeline.tracking.recording.records import log_evaluation

        log_evaluation(metrics, evaluation, self.dataset)

    def op_model(self, files: Any) -> None:
        from pipeline.tracking.models.classifier import log_model_files

        self.model_uri = log_model_files(files)

    def op_end(
        self, status: str, message: str | None, trace: str | None, tags: dict[str, str]
    ) -> dict[str, Any]:
        """End the run as the trainer says, or FAILED with this process's own error if one
        of its requests failed. Returns how it ended."""
        from pipeline.tracking.runs.lifecycle import end_run

        if self.run_id is None:  # it never started: its start's failure said why
            message = self.error[0] if self.error else message
            return {"run_id": None, "status": "FAILED", "error": message, "model_uri": None}
        if self.error is not None and status in {"FINISHED", "FAILED"}:
            status, (message, trace) = "FAILED", self.error
        run_id, self.run_id = self.run_id, None
        end_run(run_id, status, message, trace, tags)
        return {"run_id": run_id, "status": status, "error": message, "model_uri": self.model_uri}


def _one_line(op: str, exc: BaseException) -> str:
    from pipeline.tracking.store.connect import TrackingError

    if isinstance(exc, TrackingError):
        return str(exc)
    return f"recording the run ({op}) failed: {type(exc).__name__}: {exc}".splitlines()[0]


def _warm_figures() -> None:
    """Matplotlib's import and first figure (fonts, Agg), which the data card and the end
    figures would otherwise pay for."""
    from pipeline.reporting import figures

    figures.warm_up()


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
    from pipeline.cli._process import exit_now

    exit_now(0)


if __name__ == "__main__":
    main(sys.argv)
