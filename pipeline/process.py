"""Process-wide settings, made by entry points only: importing the library changes nothing.

Environment defaults must be in place before TensorFlow, Keras or MLflow is imported, so each
entry point calls `configure()` before importing anything that imports them.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn


def _process_age() -> float:
    """Seconds since this process started (Linux: /proc), so that start-up counts the
    interpreter's own start too; 0 where that is unknown."""
    try:
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


# for a run's `seconds.startup`: the interpreter's start, imports and config
STARTED = time.perf_counter() - _process_age()
_jobs_begun = 0


def job_started() -> float:
    """When this job's start-up began, for its `seconds.startup`: the process start for the
    process's first job (imports included), the call itself for any later one, so that the
    jobs of a sweep that share a process (Hydra's basic launcher) each count only their own."""
    global _jobs_begun
    _jobs_begun += 1
    return STARTED if _jobs_begun == 1 else time.perf_counter()


_watching: list[int] = []  # the parent pid being watched, once a watch has started
ORPHAN_GRACE_SECONDS = 60.0


def die_with_parent(poll_seconds: float = 0.5) -> None:
    """For a launcher's worker process (a parallel sweep's job): when the process that started
    it dies without a word (SIGKILL, the OOM killer, a closed session), stop as SIGTERM would
    stop it, so that its run ends KILLED and its memory goes back, instead of training on for
    a sweep that no longer exists. (Linux's PR_SET_PDEATHSIG fires when the parent's *thread*
    ends, and joblib's workers are started by a thread: the parent's pid is watched instead.)
    If the job has not ended `ORPHAN_GRACE_SECONDS` later, the process exits regardless."""
    if _watching:
        return
    parent = os.getppid()
    _watching.append(parent)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_GRACE_SECONDS)
        os._exit(143)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def orphaned() -> bool:
    """Whether this process watches its parent and the parent is gone."""
    return bool(_watching) and os.getppid() != _watching[0]


class _NoRetracingNotes(logging.Filter):
    """Each run builds a new model, hence new traced functions; TensorFlow counts those as
    retracing and warns, which in a sweep means a wall of false alarms."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def configure() -> None:
    """Quiet, reproducible and offline defaults for this process (each one can be overridden
    by setting the variable before the program starts)."""
    # TensorFlow's C++ start-up banner (CPU feature notes) is noise for users of this CLI.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The Keras backend is KERAS_BACKEND's (TensorFlow unless it says jax), never a per-account
    # ~/.keras/keras.json that would change a run's results from one user to the next.
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # A run makes no network calls of its own accord: MLflow's usage telemetry would post to
    # the internet (and wait up to seconds for it at exit, offline). Set it to false to allow.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # No colour-coded progress bar each time a command downloads a model's few files.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's INFO lines (creating a store's tables, validating an input example) are its
    # bookkeeping, not the command's news; its warnings and errors still show.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # JAX (KERAS_BACKEND=jax) announces at INFO that this machine has no TPU.
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    logging.getLogger("tensorflow").addFilter(_NoRetracingNotes())


def import_tensorflow_without_jax() -> None:
    """Import TensorFlow with JAX hidden: where the `jax` extra is installed, TensorFlow's
    TFLite converter imports it (`from jax import jit`, guarded by `except ImportError`) for a
    feature this pipeline never uses, which costs about a second of every run's start-up.
    JAX stays importable afterwards, for Keras when KERAS_BACKEND=jax."""
    if os.environ["KERAS_BACKEND"] != "tensorflow" or {"tensorflow", "jax"} & set(sys.modules):
        return  # (TensorFlow's import imports Keras, which must see JAX when it is the backend)
    sys.modules["jax"] = None  # type: ignore[assignment]  # makes `import jax` fail fast
    try:
        import tensorflow  # noqa: F401
    finally:
        del sys.modules["jax"]


def exit_now(code: int | str | None) -> NoReturn:
    """Exit without TensorFlow's teardown (about 3 s of freeing what the OS frees anyway).

    For the end of a command only, once its runs are all recorded and ended (the recorder
    closed). What a normal exit does before its teardown is done the same way: other
    threads are joined and their exit hooks run (a launcher's worker pool shuts its workers
    down), then the exit handlers (the stderr filter's drain, coverage's data file), logging
    is flushed and closed and the standard streams flushed; then the process ends with
    `code` as `sys.exit` would give it."""
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter calls itself
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    logging.shutdown()
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code or 0)


# Lines that TensorFlow's C++ code writes straight to file descriptor 2, which no Python
# logging setting reaches, and which say nothing to a user of this program:
NATIVE_NOISE = re.compile(
    # TF 2.21's tf.data rewrites the ParallelMapDatasetV2 that Keras' array adapter builds
    # into a MapDataset and keeps an attribute that op does not declare (once per process,
    # ~700 characters; harmless: "Unknown attributes will be ignored"). Avoiding the op would
    # mean another input pipeline, hence another shuffle order and other results.
    rb"NodeDef mentions attribute use_unbounded_threadpool which is not in the op definition"
    # absl's note before its logging is set up, and the oneDNN notice that follows it
    rb"|^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|^I0000 [^\]]*\] oneDNN custom operations are on"
)


def filter_native_noise() -> None:
    """Drop the `NATIVE_NOISE` lines from this process's standard error, nothing else.

    The C++ code writes to descriptor 2 itself, so descriptor 2 becomes a pipe that a thread
    copies to the real standard error line by line, leaving out those lines. Python's own
    `sys.stderr` (tracebacks, logging) keeps writing to the real standard error directly, so
    nothing of Python's can be held up or lost in the pipe. For the console scripts only:
    never under a test runner that captures descriptor 2 itself.
    """
    real = os.dup(2)
    read, write = os.pipe()
    sys.stderr.flush()
    sys.stderr = io.TextIOWrapper(
        os.fdopen(os.dup(real), "wb"),
        encoding=sys.stderr.encoding,
        errors="backslashreplace",
        line_buffering=True,
    )
    os.dup2(write, 2)
    os.close(write)

    def copy() -> None:
        with os.fdopen(read, "rb") as source:
            for line in iter(source.readline, b""):
                if not NATIVE_NOISE.search(line):
                    os.write(real, line)

    thread = threading.Thread(target=copy, name="stderr-filter", daemon=True)
    thread.start()

    def drain() -> None:  # at exit: end the pipe, let the thread copy what is left
        os.dup2(real, 2)  # (the last write end: the thread sees end-of-file once drained)
        thread.join(timeout=2)

    atexit.register(drain)
