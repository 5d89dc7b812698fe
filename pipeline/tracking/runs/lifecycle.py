"""One run's life cycle: it always ends FINISHED, FAILED or KILLED, never left RUNNING."""

from __future__ import annotations

import contextlib
import functools
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import mlflow
from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from pipeline.config import TrackingConfig
from pipeline.config.paths import PACKAGE_DIR, is_source_checkout
from pipeline.names import Artifact, Tag
from pipeline.tracking.runs.outcome import EndRun as EndRun  # re-exported
from pipeline.tracking.runs.outcome import ends_as
from pipeline.tracking.runs.outcome import raise_if_stop_requested as raise_if_stop_requested
from pipeline.tracking.runs.outcome import raise_interrupt as raise_interrupt  # re-exported
from pipeline.tracking.runs.processes import process_tags
from pipeline.tracking.store.connect import Store, open_store


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
    active = start_run(store.experiment_id, run_name, parent_run_id, tags, run_id)
    with ends_as(functools.partial(end_run, active.info.run_id)):
        yield active
    end_run(active.info.run_id, "FINISHED")


def start_run(
    experiment_id: str,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
    start_ms: int | None = None,
) -> mlflow.ActiveRun:
    """Start the active run (with the git and process tags), or reopen `run_id`.
    `start_ms` is its start time when the run began before this call (another process's)."""
    all_tags = {**git_tags(), **process_tags(), **(tags or {})}
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


class ClientRun:
    """A run made with the client (`open_run`), not as MLflow's fluent active run: MLflow
    does not end it when this process exits, so it may outlive the process (a search's
    parent, which the worker that finishes the study ends). `end` ends it through `end_run`."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def end(
        self,
        status: str,
        message: str | None = None,
        trace: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        end_run(self.run_id, status, message, trace, tags, self.client)


def open_run(
    store: Store,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
) -> ClientRun:
    """Make a run in `store`'s experiment with the client, with the git and process tags
    (as `start_run`'s), under `parent_run_id` if given."""
    client = MlflowClient(store.uri)
    all_tags = {**git_tags(), **process_tags(), **(tags or {})}
    if parent_run_id is not None:
        all_tags[Tag.PARENT_RUN_ID] = parent_run_id
    made = client.create_run(store.experiment_id, run_name=run_name, tags=all_tags)
    return ClientRun(client, made.info.run_id)


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
