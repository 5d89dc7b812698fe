"""The names runs are recorded under: metrics, tags and artifacts, defined once.

Evaluation computes the metrics, tracking logs them, reports and sweeps read them back; a
name written as a literal in two of those places would drift.
"""

from __future__ import annotations

from typing import Final


class Metric:
    """Metric keys. Per-epoch ones have step = epoch (1-based); the rest are logged once."""

    # per epoch, as Keras names them (loss includes the L2 penalty)
    LOSS: Final = "loss"
    ACCURACY: Final = "accuracy"
    VAL_LOSS: Final = "val_loss"
    VAL_ACCURACY: Final = "val_accuracy"
    LEARNING_RATE: Final = "learning_rate"
    EPOCH_SECONDS: Final = "epoch_seconds"
    # once per run
    TEST_LOSS: Final = "test_loss"
    TEST_ACCURACY: Final = "test_accuracy"
    TEST_MACRO_F1: Final = "test_macro_f1"
    BEST_EPOCH: Final = "best_epoch"
    EPOCHS_RUN: Final = "epochs_run"
    BEST_VAL_LOSS: Final = "best_val_loss"
    BEST_VAL_ACCURACY: Final = "best_val_accuracy"
    TRAIN_VALID_GAP: Final = "train_valid_gap"
    PARAM_COUNT: Final = "param_count"
    FLOPS_FORWARD: Final = "flops_forward_per_example"
    FLOPS_TRAIN_STEP: Final = "flops_train_step_per_example"
    SECONDS_PREFIX: Final = "seconds."  # + phase: startup, data, build, train, ...
    SECONDS_TRAIN: Final = "seconds.train"
    SECONDS_TRIAL: Final = "seconds.trial"  # a search trial's wall time, bookkeeping included


class Tag:
    """Run tag keys (MLflow's own `mlflow.*` ones where MLflow reads them)."""

    PARENT_RUN_ID: Final = "mlflow.parentRunId"
    RUN_NAME: Final = "mlflow.runName"
    GIT_COMMIT: Final = "mlflow.source.git.commit"
    GIT_DIRTY: Final = "git.dirty"
    KERAS_BACKEND: Final = "keras.backend"
    ERROR: Final = "error"
    STOPPED_EARLY: Final = "stopped_early"
    DATA_DIGEST: Final = "data.digest"  # + ".<split>" for each split's own
    DATA_SOURCE: Final = "data.source"
    DATA_FORMAT: Final = "data.format"
    DATA_SOURCE_DIGEST: Final = "data.source_digest"
    SWEEP: Final = "sweep"
    SWEEP_OVERRIDES: Final = "sweep.overrides"
    SWEEP_DIR: Final = "sweep.dir"
    SWEEP_RUNS: Final = "sweep.runs"
    SWEEP_FAILED: Final = "sweep.failed"
    BEST_PREFIX: Final = "best."  # + run_id, run_name, and each varied setting
    SEARCH: Final = "search"  # "true" on a study's parent run
    SEARCH_STUDY: Final = "search.study"
    SEARCH_STORAGE: Final = "search.storage"
    SEARCH_TRIAL: Final = "search.trial"  # the Optuna trial number of a child run
    PRUNED: Final = "pruned"


class Artifact:
    """Artifact paths inside a run."""

    CONFIG: Final = "config/config.yaml"
    OVERRIDES: Final = "config/overrides.yaml"
    ERROR: Final = "error.txt"
    HISTORY: Final = "training/history.csv"
    PER_CLASS: Final = "evaluation/per_class.csv"
    FIGURES_DIR: Final = "figures"
    DATA_DIR: Final = "data"
    COMPARISON_DIR: Final = "comparison"
    SEARCH_DIR: Final = "search"  # a study's figures, trials and best experiment
    MODEL_NAME: Final = "model"
