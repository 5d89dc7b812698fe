"""Reproducible notMNIST training with Hydra configs and MLflow tracking."""

import os

# TensorFlow's C++ start-up banner (CPU feature notes) is noise for users of this CLI.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
