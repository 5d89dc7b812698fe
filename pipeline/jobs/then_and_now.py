"""What differs between a run and now: its code (commit and uncommitted change) and its
environment (packages, builds, Python, Keras backend, platform, CPU), as `reproduce` says
before it reruns the run, and the likely causes it names when the result differs.

A run's record is read back as data (`Environment.from_record`, tags checked to be what the
pipeline writes, artifacts bounded in size before they are downloaded); nothing in it runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PACKAGE_DIR
from pipeline.names import Artifact, Tag
from pipeline.tracking.runs.environment import (
    MAX_PATCH_BYTES,
    MAX_RECORD_BYTES,
    Environment,
    capture,
    patch_files,
    uncommitted_patch,
)
from pipeline.tracking.runs.lifecycle import git_tags

log = logging.getLogger(__name__)

COMMIT = re.compile(r"[0-9a-f]{40}")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_STATE = re.compile(r"none|recorded|omitted: [\x20-\x7e]{0,200}")
# the distributions that do the arithmetic: a change in one is the likeliest cause
NUMERIC = frozenset(
    {"tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly", "keras", "tf-keras"}
    | {"jax", "jaxlib", "numpy", "ml-dtypes", "scipy"}
)
# what decides a run's code: a commit change outside these is said, not blamed
CODE_PATHS = ("pipeline", "conf", "pyproject.toml", "requirements.lock")
_SHOWN = 4  # names shown per list


@dataclass(frozen=True)
class Code:
    """The code a run ran: its commit and its uncommitted change."""

    commit: str | None  # 40 hex digits; None when not recorded (no git checkout)
    patch_state: str  # "none", "recorded", "omitted: <why>" or "not recorded"
    patch_digest: str | None = None
    patch: bytes | None = None  # the change itself, where it was recorded and is readable

    def known(self) -> bool:
        """Whether the change itself is here (none, or recorded and read)."""
        return self.patch is not None or self.patch_state == "none"

    def describe(self) -> str:
        if self.patch_state == "none":
            return "no uncommitted change"
        if self.patch is not None:
            files = sorted(patch_files(self.patch))
            return f"an uncommitted change to {_listed(files)}"
        return f"an uncommitted change ({self.patch_state})"


@dataclass(frozen=True)
class Snapshot:
    """A run's code and environment, as recorded then or as they are now."""

    code: Code
    environment: Environment | None
    missing: str | None = None  # why `environment` is None, in words


@dataclass(frozen=True)
class Difference:
    """One thing that differs: what it is, in a line, and the cause it would be, if any."""

    said: str | None  # None: said by another line (a package in the packages' line)
    cause: str | None
    rank: int  # the lower, the likelier a cause of a different result


# -- then -----------------------------------------------------------------------------------


def then(client: MlflowClient, run: Run) -> Snapshot:
    """What run `run` recorded of its code and environment, each part checked; a part that
    is not what the pipeline writes is treated as not recorded, with a warning naming it."""
    run_id = run.info.run_id
    tags = run.data.tags
    commit = tags.get(Tag.GIT_COMMIT)
    if commit is not None and not COMMIT.fullmatch(commit):
        log.warning(
            "Run %s's %s is not a commit (%r): not used", run_id, Tag.GIT_COMMIT, commit[:60]
        )
        commit = None
    sizes = _artifact_sizes(client, run_id)
    code = _code(client, run_id, tags, sizes, commit)
    if Artifact.ENVIRONMENT not in sizes:
        why = "the run recorded no environment (it predates environment records)"
        return Snapshot(code, None, why)
    try:
        if sizes[Artifact.ENVIRONMENT] > MAX_RECORD_BYTES:
            raise ValueError(f"it is {sizes[Artifact.ENVIRONMENT]:,} bytes, more than one can be")
        raw = json.loads(_download(client, run_id, Artifact.ENVIRONMENT))
        environment = Environment.from_record(raw, f"run {run_id}'s {Artifact.ENVIRONMENT}")
    except (ValueError, MlflowException, OSError) as exc:
        why = f"run {run_id}'s {Artifact.ENVIRONMENT} is not usable ({exc})".splitlines()[0]
        log.warning("%s: the environment is not compared", why)
        return Snapshot(code, None, why)
    return Snapshot(code, environment)


def _code(
    client: MlflowClient,
    run_id: str,
    tags: dict[str, str],
    sizes: dict[str, int],
    commit: str | None,
) -> Code:
    state = tags.get(Tag.GIT_PATCH)
    if state is None:  # a run from before patches were recorded: only git.dirty says
        state = "not recorded" if tags.get(Tag.GIT_DIRTY) == "true" else "none"
    elif not _STATE.fullmatch(state):
        log.warning("Run %s's %s is not one the pipeline writes: ignored", run_id, Tag.GIT_PATCH)
        state = "not recorded"
    digest = tags.get(Tag.GIT_PATCH_DIGEST)
    digest = digest if digest and _DIGEST.fullmatch(digest) else None
    if state != "recorded":
        return Code(commit, state, digest if state != "none" else None)
    size = sizes.get(Artifact.PATCH)
    if size is None or size > MAX_PATCH_BYTES or digest is None:
        why = "missing" if size is None else "no digest" if digest is None else "too big"
        log.warning("Run %s's uncommitted change is not usable (%s)", run_id, why)
        return Code(commit, f"not recorded ({why})", digest)
    patch = _download_bytes(client, run_id, Artifact.PATCH)
    if hashlib.sha256(patch).hexdigest() != digest:
        log.warning(
            "Run %s's %s does not match its %s: not used",
            run_id,
            Artifact.PATCH,
            Tag.GIT_PATCH_DIGEST,
        )
        return Code(commit, "not recorded (its digest does not match)", digest)
    return Code(commit, "recorded", digest, patch)


def _artifact_sizes(client: MlflowClient, run_id: str) -> dict[str, int]:
    folder = str(Path(Artifact.ENVIRONMENT).parent)
    try:
        return {
            f.path: f.file_size or 0 for f in client.list_artifacts(run_id, folder) if not f.is_dir
        }
    except MlflowException:
        return {}


def _download_bytes(client: MlflowClient, run_id: str, path: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return Path(client.download_artifacts(run_id, path, folder)).read_bytes()


def _download(client: MlflowClient, run_id: str, path: str) -> str:
    return _download_bytes(client, run_id, path).decode("utf-8")


# -- now ------------------------------------------------------------------------------------


def now() -> Snapshot:
    """This process's code (its checkout's commit and change) and environment."""
    commit = git_tags().get(Tag.GIT_COMMIT)
    patch = uncommitted_patch(PACKAGE_DIR)
    if patch is None:
        code = Code(commit, "none")
    else:
        code = Code(commit, patch.tags()[Tag.GIT_PATCH], patch.digest, patch.text)
    return Snapshot(code, capture())


def at_commit(recorded: Snapshot) -> Snapshot:
    """What a rerun of the run's own code runs: its commit and change, today's environment."""
    code = recorded.code
    if code.patch_state not in {"none", "recorded"}:  # the change is not there to apply
        code = Code(code.commit, "none")
    return replace(now(), code=code)


# -- the differences ------------------------------------------------------------------------


def differences(before: Snapshot, after: Snapshot) -> list[Difference]:
    """What differs from `before` (the run's record) to `after` (now, or the rerun)."""
    found = _code_differences(before.code, after.code)
    if before.environment is None or after.environment is None:
        why = before.missing or after.missing or "no environment"
        return [*found, Difference(f"environment: not compared: {why}", None, 90)]
    return found + _environment_differences(before.environment, after.environment)


def _code_differences(a: Code, b: Code) -> list[Difference]:
    found: list[Difference] = []
    if a.commit is None:
        found.append(
            Difference(
                "code: the run recorded no commit (it did not run from a git checkout)",
                "the code may differ: the run recorded no commit",
                20,
            )
        )
    elif b.commit is None:
        found.append(Difference("code: this pipeline is not a git checkout", None, 20))
    elif a.commit != b.commit:
        files = changed_code_files(a.commit, b.commit)
        where = "" if files is None else f" ({_listed(files)})" if files else ""
        said = f"code: commit {a.commit[:12]} then, {b.commit[:12]} now{where}"
        if files == []:
            said += f"; the same {', '.join(CODE_PATHS)}"
        cause = f"the code differs: commit {a.commit[:12]} vs {b.commit[:12]}{where}"
        found.append(Difference(said, None if files == [] else cause, 0 if files != [] else 60))
    same_change = a.patch_state == b.patch_state == "none" or (
        a.patch_digest is not None and a.patch_digest == b.patch_digest
    )
    if not same_change:
        where = ""
        if a.known() and b.known():
            x, y = patch_files(a.patch or b""), patch_files(b.patch or b"")
            if files := sorted(k for k in x.keys() | y.keys() if x.get(k) != y.get(k)):
                where = f" (in {_listed(files)})"
        found.append(
            Difference(
                f"uncommitted change: {a.describe()} then, {b.describe()} now",
                f"the uncommitted change differs{where}",
                1,
            )
        )
    return found


def _environment_differences(a: Environment, b: Environment) -> list[Difference]:
    found: list[Difference] = []
    changed = [
        (n, v, b.packages[n])
        for n, v in a.packages.items()
        if n in b.packages and b.packages[n] != v
    ]
    added = sorted(set(b.packages) - set(a.packages))
    removed = sorted(set(a.packages) - set(b.packages))
    if changed or added or removed:
        parts = []
        if changed:
            changed.sort(key=lambda c: (c[0] not in NUMERIC, c[0]))  # the numeric ones first
            parts.append(_listed([f"{n} {x} → {y}" for n, x, y in changed], "changed"))
        if added:
            parts.append("added " + _listed([f"{n} {b.packages[n]}" for n in added]))
        if removed:
            parts.append("removed " + _listed([f"{n} {a.packages[n]}" for n in removed]))
        found.append(Difference("packages: " + "; ".join(parts), None, 99))
    for name, x, y in changed:
        if name in NUMERIC:
            found.append(Difference(None, f"{name} {x} → {y} changed", 2))
    for name in sorted(NUMERIC & (set(added) | set(removed))):
        was, is_ = a.packages.get(name, "absent"), b.packages.get(name, "absent")
        found.append(Difference(None, f"{name} {was} → {is_} changed", 2))
    if others := [f"{n} {x} → {y}" for n, x, y in changed if n not in NUMERIC]:
        found.append(
            Difference(None, f"{len(others)} other packages changed ({_listed(others)})", 7)
        )
    for name in sorted(a.builds.keys() & b.builds.keys()):
        x, y = a.builds[name], b.builds[name]
        if x != y and x.split()[0] == y.split()[0]:  # same version, another wheel
            found.append(
                Difference(f"{name} build: {x} → {y}", f"the {name} build changed ({x} → {y})", 3)
            )
    if a.keras_backend != b.keras_backend:
        said = f"Keras backend: {a.keras_backend} → {b.keras_backend}"
        found.append(
            Difference(
                said, f"the Keras backend changed ({a.keras_backend} → {b.keras_backend})", 2
            )
        )
    if a.cpu_model != b.cpu_model or a.cpu_flags != b.cpu_flags:
        more = sorted(set(b.cpu_flags) - set(a.cpu_flags))
        fewer = sorted(set(a.cpu_flags) - set(b.cpu_flags))
        flags = " ".join([*(f"+{f}" for f in more), *(f"-{f}" for f in fewer)])
        model = f"{a.cpu_model} → {b.cpu_model}" if a.cpu_model != b.cpu_model else a.cpu_model
        said = f"CPU: {model}" + (f"; flags {flags}" if flags else "")
        cause = f"the CPU differs ({said[5:]}): op determinism is promised on one machine"
        found.append(Difference(said, cause, 4))
    if a.python != b.python:
        said = f"Python: {a.python} → {b.python}"
        found.append(Difference(said, f"Python {a.python} → {b.python} changed", 5))
    if a.platform != b.platform:
        said = f"platform: {a.platform} → {b.platform}"
        found.append(Difference(said, f"the platform changed ({a.platform} → {b.platform})", 6))
    return found


def changed_code_files(a: str, b: str, repo: Path = PACKAGE_DIR) -> list[str] | None:
    """The files of `CODE_PATHS` that differ between commits `a` and `b` (both checked to be
    commits), or None where git cannot tell (a commit not in this repository)."""
    if not (COMMIT.fullmatch(a) and COMMIT.fullmatch(b)):
        return None
    try:
        done = subprocess.run(
            ["git", "diff", "--name-only", a, b, "--", *(f":(top){p}" for p in CODE_PATHS)],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.split()


def report(found: list[Difference]) -> list[str]:
    """The lines `reproduce` prints before it reruns."""
    if not found:
        same = "commit, uncommitted change, packages, Python, Keras backend, platform and CPU"
        return [f"Then and now: the same {same}."]
    return ["Then (the run) and now:", *(f"  {d.said}" for d in found if d.said)]


def causes(found: list[Difference]) -> list[str]:
    """The differences that could change a result, likeliest first."""
    return [d.cause for d in sorted(found, key=lambda d: d.rank) if d.cause]


def _listed(names: list[str], suffix: str = "") -> str:
    shown = ", ".join(names[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{shown}{more}" + (f" {suffix}" if suffix else "")
