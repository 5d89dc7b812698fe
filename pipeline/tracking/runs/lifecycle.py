"""Every run's life cycle: opened with the tags that say where it came from, ended FINISHED,
FAILED or KILLED, never left RUNNING. The one place a run is terminated (`end_run`).

Every kind of run ends through `OpenRun`:
- a training run (a sweep's job, a search's trial, a reproduction, retraining's challenger):
  the trainer's `recording.recorder.recorded_run` is an `OpenRun` whose end is a request to
  the recorder's helper, which starts the run (`start_run`) and ends it (`end_run`);
- a run made with the client beside the fluent active run (`open_run`): retraining's audit
  runs, a sweep's parent, a sweep job whose config is invalid;
- a run another process left RUNNING (stale runs, a stopped sweep's jobs): `end_run(...,
  client=...)`.

Importing this module does not import MLflow: the trainer, which never does, ends its runs
through it.
"""

from __future__ import annotations

import contextlib
import subprocess
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from pipeline.config.paths import PACKAGE_DIR, is_source_checkout
from pipeline.names import Artifact, Kind, Tag
from pipeline.tracking.runs import environment
from pipeline.tracking.runs.environment import uncommitted_patch
from pipeline.tracking.runs.outcome import EndRun as EndRun  # re-exported
from pipeline.tracking.runs.outcome import raise_if_stop_requested as raise_if_stop_requested
from pipeline.tracking.runs.outcome import raise_interrupt as raise_interrupt  # re-exported
from pipeline.tracking.runs.outcome import signals_raise_interrupt
from pipeline.tracking.runs.processes import process_tags

if TYPE_CHECKING:
    import mlflow
    from mlflow.tracking import MlflowClient

    from pipeline.config import TrackingConfig
    from pipeline.tracking.store.location import Store

# end(status, message, traceback, tags): how a run ends, as `end_run` takes it
Ending = Callable[[str, str | None, str | None, Mapping[str, str] | None], None]
# end_tags(status, message): what a run records of an end other than FINISHED
EndTags = Callable[[str, str | None], Mapping[str, str]]

INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"


class OpenRun:
    """A run from its start to its end: the one context every kind of run ends through.

    As a `with` block, the run ends FINISHED when the block ends; FAILED on an exception (its
    one line in the `error` tag, its traceback in `error.txt`); KILLED on Ctrl-C or SIGTERM
    (which raise KeyboardInterrupt within the block); or as an `EndRun` says. A run whose
    life is not one block (a sweep's parent, from Hydra's first callback to its last) is
    ended by `end`. A run ends once: the first end stands, later ones do nothing."""

    def __init__(self, end: Ending) -> None:
        self._end = end
        self.status: str | None = None  # how it ended, once it has
        self._signals = contextlib.ExitStack()

    def end(
        self,
        status: str,
        message: str | None = None,
        trace: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """End the run as `status`, with an error `message`, a `trace` and more `tags`."""
        if self.status is None:
            self.status = status
            self._end(status, message, trace, tags)

    def end_by(self, exc: BaseException) -> None:
        """End the run as the exception that stops it says: KILLED for Ctrl-C or SIGTERM,
        an `EndRun`'s status, else FAILED with the error."""
        trace = "".join(traceback.format_exception(exc))
        if isinstance(exc, KeyboardInterrupt):
            self.end("KILLED", INTERRUPTED, trace)
        elif isinstance(exc, EndRun):
            self.end(exc.status, None, None, exc.tags)
        else:
            self.end("FAILED", f"{type(exc).__name__}: {exc}", trace)

    def __enter__(self) -> Self:
        self._signals.enter_context(signals_raise_interrupt())
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        swallowed = _swallowed_stop() if exc is None else None
        stop = exc if exc is not None else swallowed
        with self._signals:  # Ctrl-C and SIGTERM as they were, once an exception ended it
            if stop is not None:
                self.end_by(stop)
        if swallowed is not None:
            raise swallowed
        self.end("FINISHED")


def _swallowed_stop() -> KeyboardInterrupt | None:
    """A Ctrl-C or SIGTERM that Python swallowed in a finaliser (`raise_if_stop_requested`)."""
    try:
        raise_if_stop_requested()
    except KeyboardInterrupt as stop:
        return stop
    return None


class ClientRun(OpenRun):
    """A run made with the client (`open_run`), not as MLflow's fluent active run, so that
    another run (a training run) can be the active one while it is open."""

    def __init__(self, client: MlflowClient, run_id: str, end_tags: EndTags | None = None) -> None:
        super().__init__(self._terminate)
        self.client = client
        self.run_id = run_id
        self._end_tags = end_tags

    def _terminate(
        self, status: str, message: str | None, trace: str | None, tags: Mapping[str, str] | None
    ) -> None:
        if status != "FINISHED" and self._end_tags is not None:
            tags = {**self._end_tags(status, message), **(tags or {})}
        end_run(self.run_id, status, message, trace, tags, self.client)


def run_tags(tags: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tags every run starts with: the code's commit, this process (host, pid and its
    start, so that `stale-runs` finds the run if the process is SIGKILLed), then `tags`."""
    return {**git_tags(), **process_tags(), **(tags or {})}


def open_run(
    store: Store,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    end_tags: EndTags | None = None,
) -> ClientRun:
    """Make a run in `store`'s experiment with the client, with `run_tags`, under
    `parent_run_id` if given; `end_tags` says what an end other than FINISHED records besides
    the error. Use it as a `with` block, or `end` it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.uri)
    all_tags = run_tags(tags)
    if parent_run_id is not None:
        all_tags[Tag.PARENT_RUN_ID] = parent_run_id
    made = client.create_run(store.experiment_id, run_name=run_name, tags=all_tags)
    return ClientRun(client, made.info.run_id, end_tags)


def start_run(
    experiment_id: str,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
    start_ms: int | None = None,
) -> mlflow.ActiveRun:
    """Start the active run (with the git and process tags, and what it takes to rerun it:
    `environment`'s record), or reopen `run_id`. `start_ms` is its start time when the run
    began before this call (another process's)."""
    code = git_tags()
    patch = uncommitted_patch(PACKAGE_DIR) if code else None  # (new files: dirty or not)
    all_tags = {**code, **environment.tags(patch), **process_tags(), **(tags or {})}
    active = _start(experiment_id, run_name, parent_run_id, all_tags, run_id, start_ms)
    try:
        environment.record(patch)
    except BaseException as exc:  # the run has started: it must not be left RUNNING
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        why = f"recording the run's environment failed: {type(exc).__name__}: {exc}"
        end_run(active.info.run_id, status, why.splitlines()[0])
        raise
    return active


def _start(
    experiment_id: str,
    run_name: str | None,
    parent_run_id: str | None,
    all_tags: dict[str, str],
    run_id: str | None,
    start_ms: int | None,
) -> mlflow.ActiveRun:
    import mlflow
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.context.registry import resolve_tags

    if run_id is not None:
        return mlflow.start_run(run_id=run_id, tags=all_tags)
    if start_ms is None:
        return mlflow.start_run(
            experiment_id=experiment_id,
            run_name=run_name,
            parent_run_id=parent_run_id,
            tags=all_tags,
        )
    if parent_run_id is not None:
        all_tags[Tag.PARENT_RUN_ID] = parent_run_id
    # MLflow's context tags (user, source...), as `mlflow.start_run` adds them; given win
    made = MlflowClient().create_run(
        experiment_id, start_time=start_ms, tags=resolve_tags(all_tags), run_name=run_name
    )
    return mlflow.start_run(run_id=made.info.run_id)


def reopen_run(run_id: str, client: MlflowClient) -> None:
    """Run `run_id` (made by `open_run`, maybe in another process) goes on in this one:
    RUNNING again, with this process's tags, so that `maintenance` looks at this process."""
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in process_tags().items()])
    if client.get_run(run_id).info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")


def end_run(
    run_id: str,
    status: str,
    message: str | None = None,
    trace: str | None = None,
    tags: Mapping[str, str] | None = None,
    client: MlflowClient | None = None,
) -> None:
    """End run `run_id` (the active run, or any run of `client`'s store) as `status`; an error
    `message` goes to its `error` tag and `trace` (a traceback) to `error.txt`. The run ends
    even if those fail to record. The one place a run is terminated."""
    import mlflow
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    try:
        if tags:
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        if message:
            client.set_tag(run_id, Tag.ERROR, message[:5000])
        if trace:
            client.log_text(run_id, trace, Artifact.ERROR)
    finally:
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            mlflow.end_run(status)
        else:
            client.set_terminated(run_id, status)


def record_failed_job(
    tracking: TrackingConfig,
    parent_run_id: str,
    overrides: Sequence[str],
    message: str,
    run_name: str | None = None,
) -> None:
    """A sweep job that could not start (its config is invalid) as a FAILED child run, so that
    the sweep's report lists it beside the others."""
    from mlflow.entities import Param

    from pipeline.tracking.store.connect import open_store

    store = open_store(tracking)
    joined = " ".join(overrides)
    tags = {Tag.JOB_OVERRIDES: joined[:5000], Tag.KIND: Kind.SWEEP_JOB}
    with open_run(store, run_name or joined or "invalid config", tags, parent_run_id) as run:
        given = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
        run.client.log_batch(run.run_id, params=[Param(k, v) for k, v in given.items()])
        run.end("FAILED", message)


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
