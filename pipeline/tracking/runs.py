"""One run's life cycle: it always ends FINISHED, FAILED or KILLED, never left RUNNING."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import mlflow
from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig
from pipeline.config.paths import PACKAGE_DIR, is_source_checkout
from pipeline.names import Artifact, Tag
from pipeline.tracking.processes import process_tags
from pipeline.tracking.store import Store, open_store


class EndRun(Exception):  # noqa: N818 - an outcome, not an error
    """Raised inside `tracked_run` to end the run early as `status` with `tags`, not FAILED:
    a search trial that its pruner stops ends KILLED with `pruned=true`."""

    def __init__(
        self, message: str, status: str = "KILLED", tags: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.tags = dict(tags or {})


@contextlib.contextmanager
def tracked_run(
    store: Store,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that always ends: FINISHED, FAILED on an exception (with the traceback
    as an artifact), KILLED on Ctrl-C or SIGTERM, as an `EndRun` says. Never left RUNNING.
    `run_id` reopens an existing run (a resumed one) instead of starting a new one."""
    all_tags = {**git_tags(), **process_tags(), **(tags or {})}
    if run_id is not None:
        active = mlflow.start_run(run_id=run_id, tags=all_tags)
    else:
        active = mlflow.start_run(
            experiment_id=store.experiment_id,
            run_name=run_name,
            parent_run_id=parent_run_id,
            tags=all_tags,
        )
    try:
        with _signals_raise_interrupt():
            yield active
            raise_if_stop_requested()
    except KeyboardInterrupt:
        _end_with_error(active.info.run_id, "KILLED", "interrupted (Ctrl-C or SIGTERM)")
        raise
    except EndRun as end:
        try:
            mlflow.set_tags(end.tags)
        finally:
            mlflow.end_run(end.status)
        raise
    except BaseException as exc:
        _end_with_error(active.info.run_id, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    mlflow.end_run("FINISHED")


def _end_with_error(run_id: str, status: str, message: str) -> None:
    try:
        client = MlflowClient()
        client.set_tag(run_id, Tag.ERROR, message[:5000])
        client.log_text(run_id, traceback.format_exc(), Artifact.ERROR)
    finally:
        mlflow.end_run(status)


_stop_requested: list[int] = []  # the signals received while a run was tracked


def raise_interrupt(signum: int, frame: object) -> None:
    """The Ctrl-C and SIGTERM handler: a scheduler stopping the job counts as Ctrl-C, so the
    runs it leaves are marked KILLED. The request is also recorded, for
    `raise_if_stop_requested`."""
    _stop_requested.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def raise_if_stop_requested() -> None:
    """Raise again a Ctrl-C or SIGTERM that Python swallowed: when the signal arrives while a
    finaliser runs (SQLAlchemy and TensorFlow run some during garbage collection), Python
    prints the KeyboardInterrupt as "Exception ignored" and goes on, and training would too."""
    if _stop_requested:
        raise KeyboardInterrupt(f"signal {_stop_requested[-1]}")


@contextlib.contextmanager
def _signals_raise_interrupt() -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM go to `raise_interrupt` (in the main thread;
    elsewhere, no change)."""
    _stop_requested.clear()
    stops = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = [signal.signal(s, raise_interrupt) for s in stops]
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for stop, handler in zip(stops, previous, strict=True):
            signal.signal(stop, handler)


def record_failed_job(
    tracking: TrackingConfig,
    parent_run_id: str,
    overrides: Sequence[str],
    message: str,
    run_name: str | None = None,
) -> None:
    """A sweep job that could not start (its config is invalid) as a FAILED child run, so that
    the sweep's report lists it beside the others."""
    store = open_store(tracking)
    client = MlflowClient(store.uri)
    run = client.create_run(
        store.experiment_id,
        run_name=run_name or " ".join(overrides) or "invalid config",
        tags={
            Tag.PARENT_RUN_ID: parent_run_id,
            Tag.ERROR: message[:5000],
            Tag.JOB_OVERRIDES: " ".join(overrides)[:5000],
        },
    )
    given = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in given.items()])
    client.set_terminated(run.info.run_id, "FAILED")


def git_tags(source: Path = PACKAGE_DIR) -> dict[str, str]:
    """The commit the code came from, and whether the working tree differed from it (none
    for an installed package, which is not in a git tree)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=source, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    if not is_source_checkout():
        return {}
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {Tag.GIT_COMMIT: commit, Tag.GIT_DIRTY: str(dirty).lower()}
