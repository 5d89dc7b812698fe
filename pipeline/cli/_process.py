"""Process-wide settings, made by entry points only: importing the library changes nothing.

Environment defaults must be in place before TensorFlow, Keras or MLflow is imported, so each
entry point calls `configure()` before importing anything that imports them.
"""

from __future__ import annotations

import logging
import os
import sys
import time

STARTED = time.perf_counter()  # for a run's `seconds.startup`: imports and config


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
