"""What a run records to be rerun: its environment (read back as data) and its uncommitted
change as a patch that applies to its commit."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path

import pytest
from conftest import fluent_run
from git_repo import git, small_repo
from mlflow.tracking import MlflowClient

from pipeline.tracking.runs.environment import (
    Environment,
    capture,
    patch_files,
    uncommitted_patch,
)
from pipeline.tracking.store.connect import connect


def test_the_environment_names_packages_python_backend_and_cpu() -> None:
    env = capture()
    assert env.packages["mlflow"] == metadata.version("mlflow")
    assert env.packages["keras"] == metadata.version("keras")
    assert env.python.startswith(platform.python_version())
    assert env.keras_backend in {"tensorflow", "jax"}
    assert any(name.startswith(("tensorflow", "jax")) for name in env.builds)
    assert env.cpu_model
    if Path("/proc/cpuinfo").is_file():
        assert env.cpu_flags  # x86's "flags", ARM's "Features"
    again = Environment.from_record(json.loads(json.dumps(env.to_json())), "the record")
    assert again == env
    assert again.digest() == env.digest()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("packages", {"numpy": "2.0; import os"}, "packages.numpy is not a version"),
        ("packages", {"a b": "1.0"}, "holds a name that is not one"),
        ("packages", ["numpy"], "packages is not a mapping"),
        ("cpu_flags", "avx2 sse", "cpu_flags is not a list"),
        ("cpu_flags", ["avx2", "$(x)"], "not a CPU flag"),
        ("python", "3.11\n\x1b[31m", "python is not one line of printable text"),
        ("keras_backend", 7, "keras_backend is not one line"),
    ],
)
def test_a_record_read_back_is_checked_field_by_field(
    field: str, value: object, message: str
) -> None:
    raw = capture().to_json() | {field: value}
    with pytest.raises(ValueError, match=message):
        Environment.from_record(raw, "run x's environment")
    with pytest.raises(ValueError, match="not a JSON object"):
        Environment.from_record(["x"], "run x's environment")


def test_a_clean_tree_has_no_patch_and_no_git_gives_none(tmp_path: Path) -> None:
    repo = small_repo(tmp_path)
    assert uncommitted_patch(repo / "pipeline") is None
    (repo / "notes.txt").write_text("untracked, outside the code\n")
    assert uncommitted_patch(repo) is None
    assert uncommitted_patch(tmp_path) is None  # not a repository


def test_the_patch_recreates_a_dirty_tree_at_its_commit(tmp_path: Path) -> None:
    repo = small_repo(tmp_path)
    (repo / "pipeline" / "a.py").write_text("A = 2\n")  # changed, not staged
    (repo / "conf" / "c.yaml").write_text("c: 2\n")
    git(repo, "add", "conf/c.yaml")  # staged
    (repo / "pipeline" / "new.py").write_text("NEW = True\n")  # a new module
    (repo / "pipeline" / "__pycache__").mkdir()
    (repo / "pipeline" / "__pycache__" / "a.pyc").write_bytes(b"\0ignored")
    (repo / "scratch.txt").write_text("untracked, outside the code\n")
    (repo / "README").unlink()
    patch = uncommitted_patch(repo)
    assert patch is not None
    assert patch.text is not None
    assert sorted(patch_files(patch.text)) == [
        "README",
        "conf/c.yaml",
        "pipeline/a.py",
        "pipeline/new.py",
    ]
    assert patch.tags()["git.patch"] == "recorded"

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    (tmp_path / "p.diff").write_bytes(patch.text)
    git(clone, "apply", "--check", str(tmp_path / "p.diff"))
    git(clone, "apply", str(tmp_path / "p.diff"))
    for name in ("pipeline/a.py", "conf/c.yaml", "pipeline/new.py"):
        assert (clone / name).read_text() == (repo / name).read_text()
    assert not (clone / "README").exists()
    assert not (clone / "scratch.txt").exists()


def test_a_patch_over_the_limit_is_said_not_recorded(tmp_path: Path) -> None:
    repo = small_repo(tmp_path)
    (repo / "pipeline" / "a.py").write_text("A = 2\n" * 1000)
    patch = uncommitted_patch(repo, limit=1000)
    assert patch is not None
    assert patch.text is None
    assert patch.size > 1000
    state = patch.tags()["git.patch"]
    assert state.startswith("omitted: ")
    assert "bytes, over the" in state
    assert len(patch.tags()["git.patch_digest"]) == 64


def test_every_run_records_its_environment(store_uri: str) -> None:
    with fluent_run(connect(store_uri, "exp")) as run:
        pass
    client = MlflowClient(store_uri)
    done = client.get_run(run.info.run_id)
    assert done.info.status == "FINISHED"
    raw = json.loads(
        Path(client.download_artifacts(run.info.run_id, "environment/environment.json")).read_text()
    )
    env = Environment.from_record(raw, "the record")
    assert env == capture()
    assert done.data.tags["environment.digest"] == env.digest()
    assert done.data.tags["git.patch"] in {"none", "recorded"} or done.data.tags[
        "git.patch"
    ].startswith("omitted")
    names = {f.path for f in client.list_artifacts(run.info.run_id, "environment")}
    assert ("environment/uncommitted.patch" in names) == (done.data.tags["git.patch"] == "recorded")


def test_a_run_whose_environment_cannot_be_recorded_ends_failed(
    store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run has started when its record fails: it ends FAILED, not RUNNING."""
    store = connect(store_uri, "exp")
    from pipeline.tracking.runs import environment

    def unwritable(patch: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(environment, "record", unwritable)
    with pytest.raises(OSError, match="disk full"), fluent_run(store):
        pass
    client = MlflowClient(store_uri)
    [run] = client.search_runs([store.experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "recording the run's environment failed: OSError: disk full"
