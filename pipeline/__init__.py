"""Reproducible notMNIST training with Hydra configs and MLflow tracking."""

import os
import time

STARTED = time.perf_counter()  # for the run's `seconds.startup`: imports and config

# TensorFlow's C++ start-up banner (CPU feature notes) is noise for users of this CLI.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The Keras backend is KERAS_BACKEND's (TensorFlow unless it says jax), never a per-account
# ~/.keras/keras.json that would change a run's results from one user to the next.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# A run makes no network calls of its own accord: MLflow's usage telemetry would post to the
# internet (and wait up to seconds for it at exit, offline). Set it to false to allow it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
