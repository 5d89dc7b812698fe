"""A run's life cycle: every kind of run opens with its process and commit and ends FINISHED,
FAILED or KILLED through the one context (`lifecycle.OpenRun`), never left RUNNING; the
one place that terminates a run is `lifecycle`; signals; git tags."""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
from conftest import PROJECT_ROOT
from mlflow.tracking import MlflowClient

from pipeline.config import TrackingConfig
from pipeline.names import Tag
from pipeline.tracking.runs.lifecycle import (
    EndRun,
    end_run,
    git_tags,
    open_run,
    raise_interrupt,
    record_failed_job,
    start_run,
)
from pipeline.tracking.store.connect import connect


def _tracking(store_uri: str) -> TrackingConfig:
    from pipeline.config.compose import default_tracking

    return default_tracking().model_copy(update={"uri": store_uri, "experiment": "exp"})


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- every kind of run, every end -------------------------------------------------------------


@contextlib.contextmanager
def _client_run(store_uri: str) -> Iterator[str]:
    """A run made with the client: a sweep's or a search's parent, a failed job's."""
    with open_run(connect(store_uri, "exp"), "client") as run:
        yield run.run_id


@contextlib.contextmanager
def _audit_run(store_uri: str) -> Iterator[str]:
    """Retraining's audit run."""
    from pipeline.tracking.runs.audit import audit_run

    with audit_run(connect(store_uri, "exp"), "retrain", {Tag.RETRAIN_ACTION: "retrain"}) as au:
        yield au.run_id


@contextlib.contextmanager
def _training_run(store_uri: str) -> Iterator[str]:
    """A training run (a sweep's job, a search's trial, a reproduction): the trainer's side,
    whose MLflow calls the recorder's helper makes."""
    from pipeline.tracking.recording.recorder import recorded_run, recorder

    with recorded_run(recorder().store(_tracking(store_uri)), "training") as run:
        yield run.run_id


KINDS: dict[str, Callable[[str], contextlib.AbstractContextManager[str]]] = {
    "client": _client_run,
    "audit": _audit_run,
    "training": _training_run,
}
# what leaves the block -> (status, error tag); a traceback goes with every error
ENDS: dict[str, tuple[BaseException | None, str, str | None]] = {
    "finished": (None, "FINISHED", None),
    "failed": (RuntimeError("boom"), "FAILED", "RuntimeError: boom"),
    "killed": (KeyboardInterrupt(), "KILLED", "interrupted (Ctrl-C or SIGTERM)"),
    "end-run": (EndRun("pruned at epoch 2", tags={Tag.PRUNED: "true"}), "KILLED", None),
}


@pytest.mark.parametrize("end", ENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_run_ends_through_the_one_context(
    kind: str, end: str, store_uri: str
) -> None:
    raised, status, error = ENDS[end]
    run_id = ""
    with contextlib.ExitStack() as stack:
        if raised is not None:
            stack.enter_context(pytest.raises(type(raised)))
        with KINDS[kind](store_uri) as run_id:
            assert signal.getsignal(signal.SIGTERM) is raise_interrupt
            if raised is not None:
                raise raised
    client = MlflowClient(store_uri)
    found = client.get_run(run_id)
    assert found.info.status == status
    tags = found.data.tags
    assert tags[Tag.PID] == str(os.getpid())  # the process that ran it, for `stale-runs`
    assert tags[Tag.HOST]
    assert tags.get(Tag.ERROR) == error
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert ("error.txt" in artifacts) == (error is not None)
    if error is not None:
        text = Path(client.download_artifacts(run_id, "error.txt")).read_text()
        assert type(raised).__name__ in text
    if end == "end-run":
        assert tags[Tag.PRUNED] == "true"
    if kind == "audit":
        decision = {"finished": None, "failed": "failed", "killed": "killed"}.get(end, "killed")
        assert tags.get(Tag.DECISION) == decision
        assert tags.get(Tag.REASON) == (error or (status if decision else None))
    assert mlflow.active_run() is None


def test_a_stop_swallowed_by_a_finaliser_still_ends_the_run_killed(store_uri: str) -> None:
    """A Ctrl-C that Python printed and ignored in a finaliser: the block ends as it would
    have, KILLED, and the KeyboardInterrupt goes on."""
    store = connect(store_uri, "exp")
    with (
        pytest.raises(KeyboardInterrupt),
        open_run(store, "r") as run,
        contextlib.suppress(KeyboardInterrupt),  # what Python does in a finaliser
    ):
        raise_interrupt(signal.SIGINT, None)
    assert run.status == "KILLED"
    assert MlflowClient(store_uri).get_run(run.run_id).info.status == "KILLED"


def test_a_run_ends_once_the_first_end_stands(store_uri: str) -> None:
    with open_run(connect(store_uri, "exp"), "r") as run:
        run.end("FAILED", "said before the block ended")
    found = MlflowClient(store_uri).get_run(run.run_id)
    assert found.info.status == "FAILED"
    assert found.data.tags[Tag.ERROR] == "said before the block ended"


def test_signals_are_restored_after_a_run(store_uri: str) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with open_run(connect(store_uri, "exp"), "r"):
        assert signal.getsignal(signal.SIGTERM) is raise_interrupt
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_open_run_records_commit_process_and_parent(store_uri: str) -> None:
    """Host, pid and start time let `maintenance stale-runs` find a run whose process was
    SIGKILLed (an audit run recorded none before)."""
    from pipeline.tracking.runs.processes import liveness

    store = connect(store_uri, "exp")
    with open_run(store, "parent") as parent, open_run(store, "child", {}, parent.run_id) as child:
        tags = MlflowClient(store_uri).get_run(child.run_id).data.tags
        assert {Tag.HOST, Tag.PID, Tag.PID_STARTED} <= set(tags)
        assert liveness(tags).state == "alive"
        assert tags[Tag.PARENT_RUN_ID] == parent.run_id
        assert set(git_tags()) <= set(tags)


def test_the_helpers_fluent_run_ends_through_end_run(store_uri: str) -> None:
    """The recorder's helper starts the active run (`start_run`) and ends it (`end_run`)."""
    active = start_run(connect(store_uri, "exp").experiment_id, "fluent", start_ms=1000)
    assert mlflow.active_run() is not None
    end_run(active.info.run_id, "FAILED", "x: y", "a traceback")
    assert mlflow.active_run() is None
    found = MlflowClient(store_uri).get_run(active.info.run_id)
    assert (found.info.status, found.info.start_time) == ("FAILED", 1000)
    assert found.data.tags[Tag.ERROR] == "x: y"


def test_end_run_ends_another_processes_run_with_its_client(store_uri: str) -> None:
    client = MlflowClient(store_uri)
    run = client.create_run(connect(store_uri, "exp").experiment_id)
    end_run(run.info.run_id, "KILLED", "gone", tags={"a": "b"}, client=client)
    found = client.get_run(run.info.run_id)
    assert found.info.status == "KILLED"
    assert (found.data.tags[Tag.ERROR], found.data.tags["a"]) == ("gone", "b")


# -- the runs other than a block's --------------------------------------------------------------


def test_a_sweep_job_with_an_invalid_config_is_a_failed_child(store_uri: str) -> None:
    store = connect(store_uri, "exp")
    with open_run(store, "sweep") as parent:
        overrides = ["model.l2_beta=-1", "+x=2"]
        record_failed_job(_tracking(store_uri), parent.run_id, overrides, "config error: bad")
    client = MlflowClient(store_uri)
    [job] = [r for r in client.search_runs([store.experiment_id]) if r.info.run_id != parent.run_id]
    assert job.info.status == "FAILED"
    assert job.info.run_name == "model.l2_beta=-1 +x=2"
    tags = job.data.tags
    assert tags[Tag.PARENT_RUN_ID] == parent.run_id
    assert tags[Tag.ERROR] == "config error: bad"
    assert tags[Tag.JOB_OVERRIDES] == "model.l2_beta=-1 +x=2"
    assert job.data.params == {"model.l2_beta": "-1", "x": "2"}


def test_stale_runs_are_marked_killed_saying_why(store_uri: str) -> None:
    from pipeline.tracking.runs.stale import mark_killed, running_runs

    client = MlflowClient(store_uri)
    experiment = connect(store_uri, "exp").experiment_id
    tags = {Tag.HOST: socket.gethostname(), Tag.PID: str(_dead_pid())}
    left = client.create_run(experiment, tags=tags, run_name="left")
    [found] = running_runs(client)
    assert found.liveness.state == "gone"
    mark_killed(client, found)
    run = client.get_run(left.info.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags[Tag.ERROR] == f"its process died ({found.liveness.reason})"


def test_a_stopped_sweep_ends_its_parent_and_its_gone_jobs_killed(store_uri: str) -> None:
    """What the sweep's exit handler does on Ctrl-C: its jobs whose process is gone, then
    its parent, KILLED (a finished parent is left as it is)."""
    from pipeline.jobs.sweep import MlflowSweepCallback

    store = connect(store_uri, "exp")
    sweep = MlflowSweepCallback()
    sweep.parent = open_run(store, "sweep", {Tag.SWEEP: "true"})
    sweep.run_id, sweep.uri = sweep.parent.run_id, store.uri
    sweep.experiment_id = store.experiment_id
    client = MlflowClient(store_uri)
    job_tags = {Tag.PARENT_RUN_ID: sweep.run_id, Tag.HOST: socket.gethostname()}
    job = client.create_run(store.experiment_id, tags={**job_tags, Tag.PID: str(_dead_pid())})
    sweep._end_if_running("KILLED")
    assert client.get_run(sweep.run_id).info.status == "KILLED"
    ended = client.get_run(job.info.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags[Tag.ERROR] == "interrupted: its sweep was stopped"

    sweep.parent = open_run(store, "sweep 2")
    sweep.parent.end("FINISHED")  # as `on_multirun_end` does
    sweep._end_if_running("KILLED")  # then the exit handler: nothing to do
    assert client.get_run(sweep.parent.run_id).info.status == "FINISHED"


# -- the one place -------------------------------------------------------------------------------

# The only module that terminates a run (MlflowClient.set_terminated, mlflow.end_run).
ENDS_RUNS = {"pipeline/tracking/runs/lifecycle.py"}
# Calls still to move to `lifecycle.end_run` (none left: the search's moved with
# pipeline/jobs/search/); this test fails while it names a file that ends no run.
NOT_YET: set[str] = set()


def _terminates(tree: ast.AST) -> list[int]:
    """Lines calling `<anything>.set_terminated(...)` or `mlflow.end_run(...)`, or importing
    `end_run` from mlflow."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, owner = node.func.attr, node.func.value
            is_mlflow = isinstance(owner, ast.Name) and owner.id == "mlflow"
            if name == "set_terminated" or (name == "end_run" and is_mlflow):
                lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlflow"):
            lines += [node.lineno for alias in node.names if alias.name == "end_run"]
    return lines


def test_only_lifecycle_terminates_runs() -> None:
    found = {}
    for path in sorted((PROJECT_ROOT / "pipeline").rglob("*.py")):
        name = path.relative_to(PROJECT_ROOT).as_posix()
        if lines := _terminates(ast.parse(path.read_text(), name)):
            found[name] = lines
    assert set(found) >= ENDS_RUNS, "the scan finds no longer what it looks for"
    others = {k: v for k, v in found.items() if k not in ENDS_RUNS | NOT_YET}
    assert not others, f"end runs with pipeline.tracking.runs.lifecycle.end_run: {others}"
    assert set(found) >= NOT_YET, f"drop from NOT_YET: {sorted(NOT_YET - set(found))}"


def test_the_trainers_side_of_a_run_imports_no_mlflow() -> None:
    """The trainer opens and ends its runs through `lifecycle` and never imports MLflow (its
    recorder's helper does, while TensorFlow imports here)."""
    code = (
        "import sys, pipeline.tracking.runs.lifecycle, pipeline.tracking.recording.recorder; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    )
    assert out.stdout.strip() == "[]"


def test_git_tags_name_the_commit(tmp_path: Path) -> None:
    tags = git_tags()
    if tags:  # a checkout with git available
        assert len(tags["mlflow.source.git.commit"]) == 40
        assert tags["git.dirty"] in {"true", "false"}
    assert git_tags(source=tmp_path) == {}  # not a repository: no tags, no error


def test_a_registry_tag_and_a_model_id_are_read_as_data(store_uri: str) -> None:
    """`champion.history`, which anyone with EDIT on the model may rewrite, yields version
    numbers only; a logged model's id goes into a URI only as MLflow makes it."""
    from pipeline.tracking.models import registry

    client = MlflowClient(store_uri, registry_uri=store_uri)
    client.create_registered_model("notmnist")
    client.set_registered_model_tag("notmnist", "champion.history", "1,../../x,2, 3,models:/m")
    assert registry.champion_history(client, "notmnist") == ["1", "2"]
    with pytest.raises(LookupError, match="is not one MLflow makes"):
        registry._model_id("m-0123/../../x")
    assert registry._model_id("m-" + "0" * 32) == "m-" + "0" * 32
