"""`reproduce <run id> at_commit=true`: rerun a run with its own code.

The code is re-created in a temporary git worktree of this checkout's repository: the run's
recorded commit, with its recorded uncommitted change applied (`git apply --check` first).
That code runs as its own program (`python -m pipeline` with the worktree first on the path,
so its `pipeline` is imported, not this one), in this Python environment, on the same data
(relative paths and the cache taken from this project home, `PIPELINE_HOME`), into the same
store and experiment. Its config is the run's logged config, vetted as `reproduce` vets it
(`pipeline.config.logged.vetted`: no pickle or download the person did not grant), handed
to the old code as one more config file on Hydra's search path. The person's working tree
is never touched; the worktree is removed afterwards, whatever happens.

Running the recorded code is what the person asks for with `at_commit=true`: the commit
comes from their own repository; the patch from the run's record (anyone who can write to
the run can write it), so it is applied only when the person grants it by its digest
(`patch=<sha256 prefix>`), after the refusal has named the files it changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipeline.config import AppConfig, ConfigError, TrackingConfig, project_home
from pipeline.config.logged import read_record, vetted
from pipeline.config.paths import PACKAGE_DIR
from pipeline.errors import RunsFailedError
from pipeline.jobs.then_and_now import COMMIT, Code
from pipeline.names import Artifact, Tag
from pipeline.tracking.runs.environment import patch_files
from pipeline.tracking.runs.outcome import signals_raise_interrupt

log = logging.getLogger(__name__)

_GROUP = "reproduction"  # the config group the logged config is handed over in
_SECTIONS = frozenset(AppConfig.model_fields)  # what a logged config holds; never `hydra`


def repository(source: Path = PACKAGE_DIR) -> Path:
    """The root of the git checkout this pipeline runs from (ConfigError where there is
    none: an installed package has no history to go back to)."""
    try:
        done = _git(source, "rev-parse", "--show-toplevel")
    except (OSError, subprocess.SubprocessError):
        raise ConfigError(
            "at_commit=true reruns the run's commit from this pipeline's git checkout, and "
            f"{source} is not in one (an installed package): rerun without at_commit"
        ) from None
    return Path(done.stdout.strip())


def check_commit(code: Code, run_id: str, repo: Path) -> str:
    """The run's commit, checked to be one and to be in `repo` (ConfigError otherwise)."""
    commit = code.commit
    if commit is None or not COMMIT.fullmatch(commit):
        raise ConfigError(
            f"run {run_id} recorded no commit (it did not run from a git checkout): "
            "its code cannot be re-created; rerun without at_commit"
        )
    try:
        _git(repo, "cat-file", "-e", f"{commit}^{{commit}}")
    except (OSError, subprocess.SubprocessError):
        raise ConfigError(
            f"run {run_id}'s commit {commit} is not in the repository at {repo}: fetch it "
            "(git fetch), or rerun at today's code without at_commit"
        ) from None
    return commit


def check_patch(code: Code, run_id: str, granted: str | None) -> None:
    """Refuse a recorded uncommitted change that the person has not granted by its digest
    (`patch=`): it is code read back from the run's record, which anyone who can write to
    the run can write, so running it is the person's own switch, like `allow_pickle`."""
    if code.patch is None:
        return
    digest = hashlib.sha256(code.patch).hexdigest()
    if granted is not None and digest.startswith(granted):
        return
    files = ", ".join(sorted(patch_files(code.patch)))[:500]
    given = f" (patch={granted} is not its digest)" if granted else ""
    raise ConfigError(
        f"run {run_id} recorded an uncommitted change to {files}{given}: it runs as code; "
        f"review it (mlflow artifacts download -r {run_id} -a {Artifact.PATCH}) and grant "
        f"it with patch={digest[:12]}"
    )


def rerun(
    client: MlflowClient,
    original: Run,
    code: Code,
    tracking: TrackingConfig,
    given: Mapping[str, Any],
    repo: Path | None = None,
    patch: str | None = None,
) -> str:
    """Train the run's config again with the run's own code; return the new run's id.
    `tracking` is where it goes (its `uri`, `experiment`, `run_name`); `given` the person's
    own data settings, as for a rerun at today's code."""
    run_id = original.info.run_id
    repo = repo or repository()
    commit = check_commit(code, run_id, repo)
    check_patch(code, run_id, patch)
    config = _handed_config(client, run_id, tracking, given)
    with _worktree(repo, commit) as (folder, tree):
        if code.patch is not None:
            _apply(tree, folder / "uncommitted.patch", code.patch, run_id, commit)
        conf = folder / "conf" / _GROUP / "logged.yaml"
        conf.parent.mkdir(parents=True)
        conf.write_text("# @package _global_\n" + yaml.safe_dump(config, sort_keys=False))
        args = [
            f"hydra.searchpath=[{(folder / 'conf').as_uri()}]",
            f"+{_GROUP}=logged",
            f"hydra.run.dir={folder / 'outputs'}",
        ]
        if isinstance(data := config.get("data"), dict) and data.get("source") == "notmnist":
            args.insert(0, "data=notmnist")  # the group whose keys the logged section has
        begin_ms = int(time.time() * 1000)
        log.info("Rerunning run %s at commit %s in %s", run_id, commit[:12], tree)
        returncode = _run(
            [sys.executable, "-m", "pipeline", *args],
            tree,
            _environment(tree, tracking, run_id, commit),
        )
    if returncode != 0:
        raise RunsFailedError(
            f"the rerun of run {run_id} at commit {commit[:12]} exited with {returncode} "
            "(its run, if it started, says why)"
        )
    return _new_run(client, original, begin_ms)


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Run the old code to its end; stopped here (Ctrl-C, SIGTERM), it is stopped as SIGTERM
    stops a run (which ends it KILLED) before this goes on, so that the worktree it runs
    in is removed only once it is done."""
    child = subprocess.Popen(command, cwd=cwd, env=env)
    try:
        with signals_raise_interrupt():
            return child.wait()
    except BaseException:
        child.terminate()
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def _handed_config(
    client: MlflowClient, run_id: str, tracking: TrackingConfig, given: Mapping[str, Any]
) -> dict[str, Any]:
    """The run's logged config, vetted, with only the sections and tracking keys it logged
    (the old code's schema may lack today's), and no interpolation (a logged config is
    resolved: one there would make the old code read, say, an environment variable)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(client.download_artifacts(run_id, Artifact.CONFIG, folder))
        raw = read_record(path, f"run {run_id}'s {Artifact.CONFIG}")
    tree = vetted(raw, run_id, given, tracking)
    if isinstance(raw, Mapping) and isinstance(logged := raw.get("tracking"), Mapping):
        tree["tracking"] = {k: v for k, v in tree["tracking"].items() if k in logged}
        for key in ("uri", "experiment", "run_name"):
            tree["tracking"][key] = getattr(tracking, key)
    unknown = sorted(set(tree) - _SECTIONS)
    if unknown:
        raise ConfigError(
            f"run {run_id}'s logged config has sections a run's config does not: "
            f"{', '.join(map(str, unknown))[:200]}; refused"
        )
    _refuse_interpolations(tree, run_id, "")
    return tree


def _refuse_interpolations(value: object, run_id: str, key: str) -> None:
    if isinstance(value, str) and "${" in value:
        raise ConfigError(
            f"run {run_id}'s logged config holds an interpolation at {key}: a resolved config "
            "has none; refused"
        )
    if isinstance(value, Mapping):
        for k, v in value.items():
            _refuse_interpolations(str(k), run_id, f"{key}.{k}".lstrip("."))
            _refuse_interpolations(v, run_id, f"{key}.{k}".lstrip("."))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_interpolations(v, run_id, f"{key}[{i}]")


@contextlib.contextmanager
def _worktree(repo: Path, commit: str) -> Iterator[tuple[Path, Path]]:
    """A temporary folder with a detached worktree of `repo` at `commit` in it; both gone
    afterwards, and from the repository's list of worktrees."""
    folder = Path(tempfile.mkdtemp(prefix="notmnist-reproduce-"))
    tree = folder / "code"
    try:
        _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), commit)
        yield folder, tree
    finally:
        try:
            _git(repo, "worktree", "remove", "--force", str(tree))
        except (OSError, subprocess.SubprocessError):  # (half made): git forgets it once gone
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                _git(repo, "worktree", "prune")
        shutil.rmtree(folder, ignore_errors=True)


def _apply(tree: Path, path: Path, patch: bytes, run_id: str, commit: str) -> None:
    """Apply the run's recorded change in the worktree, once `git apply --check` says it
    applies whole (git refuses paths outside the tree and beyond links)."""
    path.write_bytes(patch)
    try:
        _git(tree, "apply", "--check", str(path))
    except subprocess.CalledProcessError as exc:
        line = (exc.stderr or "").strip().splitlines()[:1]
        raise ConfigError(
            f"run {run_id}'s recorded uncommitted change does not apply to commit "
            f"{commit[:12]} ({line[0] if line else 'git apply --check failed'})"
        ) from None
    _git(tree, "apply", str(path))
    files = sorted(patch_files(patch))
    log.info("Applied run %s's uncommitted change to %s", run_id, ", ".join(files)[:2000])


def _environment(tree: Path, tracking: TrackingConfig, run_id: str, commit: str) -> dict[str, str]:
    """The old code's environment: its own package first on the path, this project home
    (where relative data paths and the cache are), the store, and the new run's tags
    (MLflow's `MLFLOW_RUN_CONTEXT`, which every run started then carries)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH")) if p)
    env["PIPELINE_HOME"] = str(project_home())
    env["MLFLOW_TRACKING_URI"] = tracking.uri or env.get("MLFLOW_TRACKING_URI", "")
    context = {Tag.REPRODUCES: run_id, Tag.REPRODUCED_AT: commit}
    with contextlib.suppress(ValueError, TypeError):
        context = {**json.loads(env.get("MLFLOW_RUN_CONTEXT", "{}")), **context}
    env["MLFLOW_RUN_CONTEXT"] = json.dumps(context)
    return env


def _new_run(client: MlflowClient, original: Run, begin_ms: int) -> str:
    """The run the rerun made: the latest of the experiment that reproduces the original
    and started after the rerun did."""
    found = client.search_runs(
        [original.info.experiment_id],
        f"tags.{Tag.REPRODUCES} = '{original.info.run_id}' and attributes.start_time >= {begin_ms}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        raise RunsFailedError(
            f"the rerun of run {original.info.run_id} finished but recorded no run tagged "
            f"{Tag.REPRODUCES}={original.info.run_id} (its code may not be this pipeline's)"
        )
    return str(found[0].info.run_id)


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=120
    )
