"""What it takes to rerun a run, recorded at its start: the uncommitted change to the code (a
patch, when the tree is dirty) and the environment (installed distributions, Python, the
Keras backend and the TensorFlow/JAX builds, the CPU model and flags).

The commit itself is `lifecycle.git_tags`'. Capture is cheap enough for every run's start in
the recorder's helper: the distributions and the CPU are read once per process (a sweep's
runs share them), and `git diff` runs only when the tree is dirty.

Read back (`Environment.from_record`), a record is data: a bounded JSON file whose names and
versions are checked to be what this module writes, shown and compared, never executed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.names import Artifact, Tag

MAX_PATCH_BYTES = 1 << 20  # an uncommitted change bigger than this is not recorded, only said
MAX_RECORD_BYTES = 1 << 20  # an environment record is ~15 KB
# where the code a run runs is: new files there are part of its uncommitted change
CODE_PATHS = ("pipeline", "conf")
# the distributions whose build decides the arithmetic
BUILDS = ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly", "jax", "jaxlib")
# names and versions as distributions spell them; anything else in a record is not ours
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]{0,127}")
_FLAG = re.compile(r"[A-Za-z0-9_.]{1,64}")
_DIST_FOLDER = re.compile(r"(.+?)-([^-]+)\.(?:dist-info|egg-info)")
_TEXT = re.compile(r"[\x20-\x7e]{0,300}")  # printable ASCII, one line


@dataclass(frozen=True)
class Environment:
    """Where a run ran: enough to say what changed since, not to rebuild it."""

    python: str  # "3.11.7 CPython"
    platform: str  # platform.platform(): OS, kernel, machine, libc
    cpu_model: str
    cpu_flags: tuple[str, ...]
    keras_backend: str
    builds: dict[str, str] = field(default_factory=dict)  # tensorflow: "2.19.0 cp311-...-x86_64"
    packages: dict[str, str] = field(default_factory=dict)  # every distribution: its version

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "cpu_flags": list(self.cpu_flags)}

    def digest(self) -> str:
        """One value per environment, for a runs table to show which runs share one."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def from_record(cls, raw: object, what: str) -> Environment:
        """An environment read back from a run, checked field by field (ValueError naming
        `what` and the field otherwise)."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"{what} is not a JSON object")

        def text(key: str) -> str:
            value = raw.get(key)
            if not isinstance(value, str) or not _TEXT.fullmatch(value):
                raise ValueError(f"{what}: {key} is not one line of printable text")
            return value

        def versions(key: str, pattern: re.Pattern[str]) -> dict[str, str]:
            value = raw.get(key)
            if not isinstance(value, Mapping) or len(value) > 10_000:
                raise ValueError(f"{what}: {key} is not a mapping of names to versions")
            for name, version in value.items():
                if not (isinstance(name, str) and _NAME.fullmatch(name)):
                    raise ValueError(f"{what}: {key} holds a name that is not one: {name!r:.80}")
                if not (isinstance(version, str) and pattern.fullmatch(version)):
                    raise ValueError(f"{what}: {key}.{name} is not a version: {version!r:.80}")
            return dict(value)

        flags = raw.get("cpu_flags")
        if not isinstance(flags, list) or len(flags) > 2000:
            raise ValueError(f"{what}: cpu_flags is not a list of CPU flags")
        if not all(isinstance(f, str) and _FLAG.fullmatch(f) for f in flags):
            raise ValueError(f"{what}: cpu_flags holds a value that is not a CPU flag")
        return cls(
            python=text("python"),
            platform=text("platform"),
            cpu_model=text("cpu_model"),
            cpu_flags=tuple(flags),
            keras_backend=text("keras_backend"),
            builds=versions("builds", _TEXT),
            packages=versions("packages", _VERSION),
        )


def capture() -> Environment:
    """This process's environment (the distributions and CPU read once per process)."""
    return Environment(
        python=f"{platform.python_version()} {platform.python_implementation()}",
        platform=_platform(),
        cpu_model=_cpu()[0],
        cpu_flags=_cpu()[1],
        keras_backend=_keras_backend(),
        builds=_builds(),
        packages=dict(_packages()),
    )


@functools.cache
def _platform() -> str:
    return re.sub(r"[^\x20-\x7e]", "?", platform.platform())[:300]


def _keras_backend() -> str:
    """The backend Keras uses here: Keras's own answer where it is imported (the trainer),
    else KERAS_BACKEND's, which every entry point sets before Keras's import (the helper
    inherits it)."""
    keras = sys.modules.get("keras")
    backend = getattr(getattr(keras, "backend", None), "backend", None)
    if callable(backend):
        return str(backend())
    return os.environ.get("KERAS_BACKEND") or "tensorflow"


@functools.cache
def _packages() -> tuple[tuple[str, str], ...]:
    """Every installed distribution, by its normalised name (the first on `sys.path`, as
    import finds it), and its version. Read from the metadata folders' names
    (`<name>-<version>.dist-info`, as installers write them): 1 ms, where parsing every
    METADATA file (`importlib.metadata.distributions()`) takes 80-250 ms."""
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as found_here:
                folders = sorted(f.name for f in found_here)
        except OSError:
            continue
        for folder in folders:
            if not folder.endswith((".dist-info", ".egg-info")):
                continue
            named = _DIST_FOLDER.fullmatch(folder)
            if named is None:  # an egg-info without its version in its name: read it
                dist = metadata.PathDistribution(Path(entry or ".", folder))
                named_as = (dist.metadata["Name"], dist.version)
            else:
                named_as = (named[1], named[2])
            name = re.sub(r"[-_.]+", "-", str(named_as[0] or "")).lower()
            if _NAME.fullmatch(name) and _VERSION.fullmatch(str(named_as[1] or "")):
                found.setdefault(name, str(named_as[1]))  # (what a record may hold)
    return tuple(sorted(found.items()))


@functools.cache
def _builds() -> dict[str, str]:
    """The installed TensorFlow/JAX distributions: version and wheel tag (which build of that
    version: Python, ABI, platform)."""
    builds = {}
    for name in BUILDS:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        wheel = dist.read_text("WHEEL") or ""
        tags = [
            line.split(":", 1)[1].strip() for line in wheel.splitlines() if line.startswith("Tag:")
        ]
        builds[name] = re.sub(r"[^\x20-\x7e]", "?", " ".join([dist.version, *tags[:1]]))[:300]
    return builds


@functools.cache
def _cpu() -> tuple[str, tuple[str, ...]]:
    """The CPU's model name and flags: the first processor's block of /proc/cpuinfo, read
    once (it is one line per processor per field: KBs on a big machine); elsewhere the
    machine's processor name and no flags."""
    fields: dict[str, str] = {}
    try:
        with Path("/proc/cpuinfo").open(encoding="ascii", errors="replace") as info:
            for line in info:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = fields.get("model name") or fields.get("Hardware") or platform.processor()
    flags = fields.get("flags") or fields.get("Features") or ""
    model = re.sub(r"[^\x20-\x7e]", "?", model or platform.machine())[:300]
    return model, tuple(f for f in flags.split() if _FLAG.fullmatch(f))


# -- the code: the uncommitted change ---------------------------------------------------------


@dataclass(frozen=True)
class Patch:
    """The working tree's change from its commit: `git diff HEAD --binary` (tracked files,
    staged or not), then the new files under `CODE_PATHS` that git does not ignore (a new
    module the code imports). Other untracked files are not part of it, as they are not of
    `git.dirty`."""

    digest: str  # sha256 of the whole diff, recorded or not
    size: int
    text: bytes | None  # None when over the size limit (then only said, by the tag)

    def tags(self) -> dict[str, str]:
        if self.text is None:
            state = f"omitted: {self.size:,} bytes, over the {MAX_PATCH_BYTES:,}-byte limit"
        else:
            state = "recorded"
        return {Tag.GIT_PATCH: state, Tag.GIT_PATCH_DIGEST: self.digest}


def uncommitted_patch(source: Path, limit: int = MAX_PATCH_BYTES) -> Patch | None:
    """The git tree's change from HEAD at `source`; None where there is none or no git.
    New files are read only while the patch stays within `limit` (a big untracked file is
    not hashed to be left out)."""

    def git(*args: str, cwd: Path = source, ok: tuple[int, ...] = (0,)) -> bytes:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30)
        if done.returncode not in ok:
            raise subprocess.CalledProcessError(done.returncode, args)
        return done.stdout

    try:  # (paths from the top of the tree, wherever `source` is in it)
        diff = git("diff", "HEAD", "--binary", "--no-color", "--no-ext-diff")
        code = [f":(top){path}" for path in CODE_PATHS]
        new = git("ls-files", "--others", "--exclude-standard", "--full-name", "-z", "--", *code)
        names = sorted(n.decode() for n in new.split(b"\0") if n)
        top = Path(git("rev-parse", "--show-toplevel").decode().strip()) if names else source
        size = len(diff)
        for name in names:
            size += (top / name).stat().st_size
            if size <= limit:  # else the patch is omitted: its digest need not be exact
                diff += git(
                    "diff", "--no-index", "--binary", "--", "/dev/null", name, cwd=top, ok=(0, 1)
                )
            else:
                diff += name.encode() + b"\n"
    except (OSError, UnicodeDecodeError, subprocess.SubprocessError):
        return None
    if not diff:
        return None
    digest = hashlib.sha256(diff).hexdigest()
    return Patch(digest, max(size, len(diff)), diff if len(diff) <= limit else None)


def patch_files(diff: bytes) -> dict[str, bytes]:
    """A diff's part per file, by path (`diff --git a/P b/P`), to say which files two
    changes differ in."""
    parts: dict[str, bytes] = {}
    for chunk in re.split(rb"(?m)^(?=diff --git )", diff):
        if first := chunk.split(b"\n", 1)[0]:
            path = first.rpartition(b" b/")[2].decode("utf-8", "replace")
            parts[path or first.decode("utf-8", "replace")] = chunk
    return parts


def record(patch: Patch | None, env: Environment | None = None) -> None:
    """Log the environment (and the patch, when there is one to record) on the active run,
    in one call (each artifact call is tens of milliseconds)."""
    import tempfile

    import mlflow

    env = env or capture()
    with tempfile.TemporaryDirectory() as folder:
        files = Path(folder)
        (files / Path(Artifact.ENVIRONMENT).name).write_text(json.dumps(env.to_json(), indent=1))
        if patch is not None and patch.text is not None:
            (files / Path(Artifact.PATCH).name).write_bytes(patch.text)
        mlflow.log_artifacts(folder, str(Path(Artifact.ENVIRONMENT).parent))


def tags(patch: Patch | None, env: Environment | None = None) -> dict[str, str]:
    """The run's tags for them: the patch's state (`none` for a clean tree, so that a resumed
    run's tag is its own) and the environment's digest."""
    code = patch.tags() if patch is not None else {Tag.GIT_PATCH: "none"}
    return {**code, Tag.ENVIRONMENT_DIGEST: (env or capture()).digest()}
