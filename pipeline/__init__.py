"""Reproducible notMNIST training with Hydra configs and MLflow tracking."""

import os
import time

STARTED = time.perf_counter()  # for the run's `seconds.startup`: imports and config

# TensorFlow's C++ start-up banner (CPU feature notes) is noise for users of this CLI.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# A run makes no network calls of its own accord: MLflow's usage telemetry would post to the
# internet (and wait up to seconds for it at exit, offline). Set it to false to allow it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
