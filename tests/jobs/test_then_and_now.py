"""What `reproduce` says differs between a run and now, the causes it names, and the runs
whose code `at_commit=true` refuses to re-create."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from conftest import cli, fluent_run
from git_repo import git, small_repo
from mlflow.tracking import MlflowClient

from pipeline.config import AppConfig, ConfigError
from pipeline.jobs import then_and_now
from pipeline.jobs.at_commit import check_commit, check_patch, rerun
from pipeline.jobs.then_and_now import Code, Snapshot, causes, differences, report
from pipeline.tracking.runs.environment import capture
from pipeline.tracking.store.connect import connect

A, B = "a" * 40, "b" * 40


def snapshot(commit: str = A, **changes: object) -> Snapshot:
    env = dataclasses.replace(capture(), **changes)  # type: ignore[arg-type]
    return Snapshot(Code(commit, "none"), env)


def test_the_same_code_and_environment_say_so() -> None:
    found = differences(snapshot(), snapshot())
    assert found == []
    assert report(found) == [
        "Then and now: the same commit, uncommitted change, packages, Python, Keras backend, "
        "platform and CPU."
    ]


def test_a_changed_tensorflow_is_named_before_other_packages() -> None:
    now = capture()
    tf = next(name for name in now.builds if name.startswith("tensorflow"))
    old = {**now.packages, tf: "2.0.0", "six": "0.1"}
    found = differences(snapshot(packages=old), snapshot())
    lines = "\n".join(report(found))
    assert f"{tf} 2.0.0 → {now.packages[tf]}" in lines
    assert causes(found)[0] == f"{tf} 2.0.0 → {now.packages[tf]} changed"
    assert causes(found)[1].startswith("1 other packages changed (six 0.1 → ")


def test_another_commit_is_the_likeliest_cause() -> None:
    old = {**capture().packages, "numpy": "1.0.0"}
    then = Snapshot(Code(A, "none"), dataclasses.replace(capture(), packages=old))
    found = differences(then, snapshot(B, cpu_flags=("sse2",), python="3.99.0 CPython"))
    assert causes(found)[0] == f"the code differs: commit {A[:12]} vs {B[:12]}"
    assert causes(found)[1].startswith("numpy 1.0.0 → ")
    said = "\n".join(report(found))
    assert f"code: commit {A[:12]} then, {B[:12]} now" in said
    assert "CPU: " in said
    assert "Python: " in said
    assert any(c.startswith("the CPU differs") for c in causes(found))


def test_an_uncommitted_change_names_the_files_it_differs_in() -> None:
    one = b"diff --git a/pipeline/a.py b/pipeline/a.py\n+A = 1\n"
    two = b"diff --git a/pipeline/a.py b/pipeline/a.py\n+A = 2\n"
    same = b"diff --git a/conf/c.yaml b/conf/c.yaml\n+c: 1\n"
    then = Snapshot(Code(A, "recorded", "1" * 64, one + same), capture())
    now = Snapshot(Code(A, "recorded", "2" * 64, two + same), capture())
    found = differences(then, now)
    assert causes(found) == ["the uncommitted change differs (in pipeline/a.py)"]
    assert differences(then, then) == []
    clean = Snapshot(Code(A, "none"), capture())
    assert "no uncommitted change now" in report(differences(then, clean))[1]


def test_a_run_without_an_environment_record_says_so() -> None:
    then = Snapshot(Code(A, "none"), None, "the run recorded no environment")
    assert report(differences(then, snapshot())) == [
        "Then (the run) and now:",
        "  environment: not compared: the run recorded no environment",
    ]


def test_a_rewritten_record_is_data(store_uri: str) -> None:
    """A tag that is not a commit and an environment that is not one the pipeline writes are
    not used (said in a warning), never acted on."""
    with fluent_run(connect(store_uri, "exp"), tags={"mlflow.source.git.commit": "HEAD~1; x"}):
        bad = capture().to_json()
        bad["packages"] = {"numpy": "$(touch /tmp/pwned)"}
        mlflow.log_dict(bad, "environment/environment.json")
        run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    client = MlflowClient(store_uri)
    then = then_and_now.then(client, client.get_run(run_id))
    assert then.code.commit is None
    assert then.environment is None
    assert then.missing is not None
    assert "packages.numpy is not a version" in then.missing
    with pytest.raises(ConfigError, match=f"run {run_id} recorded no commit"):
        check_commit(then.code, run_id, Path.cwd())


def test_a_changed_environment_is_read_back(store_uri: str) -> None:
    with fluent_run(connect(store_uri, "exp")):
        old = capture().to_json()
        old["packages"] = {**old["packages"], "keras": "3.0.0"}
        mlflow.log_dict(old, "environment/environment.json")
        run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    client = MlflowClient(store_uri)
    then = then_and_now.then(client, client.get_run(run_id))
    assert then.environment is not None
    assert then.environment.packages["keras"] == "3.0.0"
    found = differences(then, then_and_now.now())
    assert f"keras 3.0.0 → {capture().packages['keras']} changed" in causes(found)


def test_a_commit_not_in_the_repository_is_refused_in_one_line(store_uri: str) -> None:
    unknown = "0123456789" * 4
    with fluent_run(connect(store_uri, "exp"), tags={"mlflow.source.git.commit": unknown}) as run:
        pass
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri}
    result = cli("reproduce", run.info.run_id, "at_commit=true", env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"config error: run {run.info.run_id}'s commit {unknown} is not in")
    assert "rerun at today's code without at_commit" in line


def test_a_patch_that_does_not_apply_is_refused_and_the_worktree_removed(
    store_uri: str, tmp_path: Path, tiny: Callable[..., AppConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = small_repo(tmp_path)
    commit = git(repo, "rev-parse", "HEAD").strip()
    patch = b"""diff --git a/pipeline/a.py b/pipeline/a.py
--- a/pipeline/a.py
+++ b/pipeline/a.py
@@ -1 +1 @@
-A = 9
+A = 2
"""
    with fluent_run(connect(store_uri, "exp")):
        mlflow.log_dict(tiny().model_dump(mode="json"), "config/config.yaml")
        run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    client = MlflowClient(store_uri)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    code = Code(commit, "recorded", "0" * 64, patch)
    tracking = tiny().tracking.model_copy(update={"uri": store_uri})
    refused = f"run {run_id}'s recorded uncommitted change does not apply to commit {commit[:12]}"
    granted = hashlib.sha256(patch).hexdigest()[:12]
    with pytest.raises(ConfigError, match=refused):
        rerun(client, client.get_run(run_id), code, tracking, {}, repo=repo, patch=granted)
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1  # its own
    assert git(repo, "status", "--porcelain") == ""
    assert list(temporary.iterdir()) == []


def test_a_logged_config_with_an_interpolation_is_refused(
    store_uri: str, tmp_path: Path, tiny: Callable[..., AppConfig]
) -> None:
    """A resolved config has none: one would make the old code read what the record names
    (`${oc.env:...}`: a secret into the new run's params)."""
    repo = small_repo(tmp_path)
    commit = git(repo, "rev-parse", "HEAD").strip()
    config = tiny().model_dump(mode="json")
    config["model"]["name"] = "${oc.env:HOME}"
    with fluent_run(connect(store_uri, "exp")):
        mlflow.log_dict(config, "config/config.yaml")
        run_id = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    client = MlflowClient(store_uri)
    tracking = tiny().tracking.model_copy(update={"uri": store_uri})
    with pytest.raises(ConfigError, match="holds an interpolation at model.name"):
        rerun(client, client.get_run(run_id), Code(commit, "none"), tracking, {}, repo=repo)


def test_another_commit_names_the_code_files_that_changed(tmp_path: Path) -> None:
    """From the package's folder (as the pipeline runs git), paths from the top of the
    tree; a commit that changed only files outside the code is said, not blamed."""
    repo = small_repo(tmp_path)
    first = git(repo, "rev-parse", "HEAD").strip()
    (repo / "pipeline" / "a.py").write_text("A = 2\n")
    git(repo, "commit", "-qam", "code")
    second = git(repo, "rev-parse", "HEAD").strip()
    (repo / "README").write_text("more\n")
    git(repo, "commit", "-qam", "docs")
    third = git(repo, "rev-parse", "HEAD").strip()
    package = repo / "pipeline"
    assert then_and_now.changed_code_files(first, second, package) == ["pipeline/a.py"]
    assert then_and_now.changed_code_files(second, third, package) == []
    assert then_and_now.changed_code_files(first, "f" * 40, package) is None  # not in it
    assert then_and_now.changed_code_files(first, "HEAD", package) is None  # not a commit


@pytest.mark.parametrize("granted", [None, "0123456789ab"])
def test_a_recorded_change_runs_only_when_granted_by_its_digest(granted: str | None) -> None:
    """The recorded patch is code from the run's record (anyone who can write to the run can
    write it): at_commit applies it only with `patch=<its sha256>`, from the person."""
    patch = (
        b"diff --git a/pipeline/a.py b/pipeline/a.py\n--- a/pipeline/a.py\n+++ b/pipeline/a.py\n"
    )
    digest = hashlib.sha256(patch).hexdigest()
    code = Code(A, "recorded", digest, patch)
    with pytest.raises(ConfigError) as refused:
        check_patch(code, "r" * 32, granted)
    [line] = str(refused.value).splitlines()
    assert "recorded an uncommitted change to pipeline/a.py" in line
    assert line.endswith(f"grant it with patch={digest[:12]}")
    check_patch(code, "r" * 32, digest[:12])  # granted: no error
    check_patch(code, "r" * 32, digest)
    check_patch(Code(A, "none"), "r" * 32, None)  # nothing to grant
