"""The names runs are recorded under: metrics, tags and artifacts, defined once.

Evaluation computes the metrics, tracking logs them, reports and sweeps read them back; a
name written as a literal in two of those places would drift.
"""

from __future__ import annotations

from typing import Final, Literal

# How a notMNIST source is read (data.format, data.exclude_format, retrain.holdout.format):
# the schema's choices, the loaders' argument and the `data.format` tag of a real source.
SourceFormat = Literal["auto", "tar", "folder", "idx", "pickle"]


class Metric:
    """Metric keys. Per-epoch ones have step = epoch (1-based); the rest are logged once."""

    # per epoch, as Keras names them (loss includes the L2 penalty)
    LOSS: Final = "loss"
    ACCURACY: Final = "accuracy"
    VAL_LOSS: Final = "val_loss"
    VAL_ACCURACY: Final = "val_accuracy"
    # the cross-entropy alone, without the penalty: comparable across L2 settings
    DATA_LOSS: Final = "data_loss"
    VAL_DATA_LOSS: Final = "val_data_loss"
    L2_PENALTY: Final = "l2_penalty"  # the penalty at the epoch's end weights
    LEARNING_RATE: Final = "learning_rate"
    EPOCH_SECONDS: Final = "epoch_seconds"
    # once per run
    TEST_LOSS: Final = "test_loss"
    TEST_DATA_LOSS: Final = "test_data_loss"
    TEST_ACCURACY: Final = "test_accuracy"
    TEST_MACRO_F1: Final = "test_macro_f1"
    BEST_EPOCH: Final = "best_epoch"
    EPOCHS_RUN: Final = "epochs_run"
    BEST_VAL_LOSS: Final = "best_val_loss"
    BEST_VAL_ACCURACY: Final = "best_val_accuracy"
    BEST_VAL_DATA_LOSS: Final = "best_val_data_loss"
    TRAIN_VALID_GAP: Final = "train_valid_gap"
    PARAM_COUNT: Final = "param_count"
    FLOPS_FORWARD: Final = "flops_forward_per_example"
    FLOPS_TRAIN_STEP: Final = "flops_train_step_per_example"
    SECONDS_PREFIX: Final = "seconds."  # + phase: startup, data, build, train, ...
    SECONDS_TRAIN: Final = "seconds.train"
    # training-source images equal to a holdout image, dropped before the split (retraining)
    HOLDOUT_OVERLAP_REMOVED: Final = "data.holdout_overlap_removed"
    # retraining's holdout scores, prefixed "challenger." / "champion." on the audit run
    HOLDOUT_ACCURACY: Final = "holdout_accuracy"
    HOLDOUT_MACRO_F1: Final = "holdout_macro_f1"
    HOLDOUT_LOSS: Final = "holdout_loss"
    HOLDOUT_CLASS_PREFIX: Final = "holdout_accuracy."  # + letter
    SECONDS_TRIAL: Final = "seconds.trial"  # a search trial's wall time, bookkeeping included


class Tag:
    """Run tag keys (MLflow's own `mlflow.*` ones where MLflow reads them)."""

    KIND: Final = "kind"  # what made the run: one of `Kind`'s values, on every run

    PARENT_RUN_ID: Final = "mlflow.parentRunId"
    RUN_NAME: Final = "mlflow.runName"
    GIT_COMMIT: Final = "mlflow.source.git.commit"
    SOURCE_NAME: Final = "mlflow.source.name"  # MLflow's: the program that made the run
    SOURCE_TYPE: Final = "mlflow.source.type"
    GIT_DIRTY: Final = "git.dirty"
    # the uncommitted change: "none", "recorded" (artifact PATCH) or "omitted: <why>"
    GIT_PATCH: Final = "git.patch"
    GIT_PATCH_DIGEST: Final = "git.patch_digest"  # sha256 of `git diff HEAD --binary`
    ENVIRONMENT_DIGEST: Final = "environment.digest"  # of artifact ENVIRONMENT
    KERAS_BACKEND: Final = "keras.backend"
    ERROR: Final = "error"
    STOPPED_EARLY: Final = "stopped_early"
    DATA_DIGEST: Final = "data.digest"  # + ".<split>" for each split's own
    DATA_SOURCE: Final = "data.source"
    DATA_FORMAT: Final = "data.format"
    DATA_SOURCE_DIGEST: Final = "data.source_digest"
    SWEEP: Final = "sweep"
    SWEEP_OVERRIDES: Final = "sweep.overrides"  # on the parent: the sweep's command line
    JOB_OVERRIDES: Final = "overrides"  # on a run: all its overrides (its name is shortened)
    SWEEP_DIR: Final = "sweep.dir"
    SWEEP_RUNS: Final = "sweep.runs"
    SWEEP_FAILED: Final = "sweep.failed"
    BEST_PREFIX: Final = "best."  # + run_id, run_name, and each varied setting
    REPRODUCES: Final = "reproduces"  # on a run made by `pipeline.reproduce`: the original's id
    REPRODUCED_AT: Final = "reproduces.at_commit"  # the commit `reproduce at_commit=true` ran
    # retraining: on audit runs (and, where said, on model versions)
    RETRAIN_ACTION: Final = "retrain.action"  # retrain, promote, rollback
    DECISION: Final = "retrain.decision"  # promoted, kept, skipped, locked_out, failed (+ versions)
    REASON: Final = "retrain.reason"  # why, in words (+ versions)
    TRAINING_RUN_ID: Final = "retrain.training_run_id"  # (+ versions)
    AUDIT_RUN_ID: Final = "retrain.audit_run_id"  # (versions, training runs)
    HOLDOUT_DIGEST: Final = "retrain.holdout_digest"  # (+ versions)
    HOLDOUT_PATH: Final = "retrain.holdout_path"
    CONFIG_DIGEST: Final = "retrain.config_digest"  # (+ versions)
    FINGERPRINT: Final = "retrain.fingerprint"  # data + config + holdout digests (+ versions)
    MODEL_NAME: Final = "retrain.model_name"
    CHALLENGER_VERSION: Final = "retrain.challenger_version"
    CHAMPION_BEFORE: Final = "retrain.champion_before"
    CHAMPION_AFTER: Final = "retrain.champion_after"
    LOCK_HOLDER: Final = "retrain.lock_holder"
    MANUAL: Final = "retrain.manual"  # versions: the last promote/rollback by hand to them
    CHAMPION_HISTORY: Final = "champion.history"  # registered model: champion versions, in order
    # the process that runs it, so that `pipeline.maintenance stale-runs` can tell a run
    # whose process died (SIGKILL, OOM killer, power cut) from one still training
    HOST: Final = "host"
    PID: Final = "pid"
    PID_STARTED: Final = "pid.started"  # the process's start time (Linux: clock ticks since boot)
    RESUMED: Final = "resumed"  # how many times `train.resume` continued the run
    CHECKPOINT: Final = "checkpoint"  # its training checkpoint's folder under checkpoints/

    SEARCH: Final = "search"  # "true" on a study's parent run
    SEARCH_STUDY: Final = "search.study"
    SEARCH_STORAGE: Final = "search.storage"
    SEARCH_TRIAL: Final = "search.trial"  # the Optuna trial number of a child run
    SEARCH_RERUN_OF: Final = "search.rerun_of"  # a top trial's rerun with another seed: its number
    SEARCH_SEED: Final = "search.seed"  # that rerun's train.seed
    PRUNED: Final = "pruned"


class Kind:
    """The `kind` tag's values: which part of the pipeline made a run, so that the runs table
    can filter on it (`tags.kind = 'training'`) and the comparison view shows only runs
    trained as configured (`COMPARABLE`)."""

    TRAINING: Final = "training"  # `notmnist train`: one run, no parent
    SWEEP: Final = "sweep"  # a `-m` sweep's parent run (its report, the best run's metrics)
    SWEEP_JOB: Final = "sweep-job"  # one job of a sweep, under its parent
    SEARCH: Final = "search"  # an Optuna study's parent run
    TRIAL: Final = "trial"  # one trial of a study, under its parent
    RETRAIN_CHALLENGER: Final = "retrain-challenger"  # the training run of a retrain
    AUDIT: Final = "audit"  # a retrain, promote or rollback attempt (`retraining` experiment)
    REPRODUCTION: Final = "reproduction"  # `notmnist reproduce`: a rerun of another run
    # trained on the data and settings a person chose, side by side in the comparison view;
    # trials, challengers and reproductions are compared where they belong (the study's
    # report, the audit runs, the reproduction's own table)
    COMPARABLE: Final = (TRAINING, SWEEP_JOB)
    ALL: Final = (
        *(TRAINING, SWEEP, SWEEP_JOB, SEARCH, TRIAL),
        *(RETRAIN_CHALLENGER, AUDIT, REPRODUCTION),
    )


class ExperimentTag:
    """Experiment tag keys that MLflow's UI reads."""

    # "custom_model_development" opens the runs table, not the GenAI overview (MLflow 3 UI)
    KIND: Final = "mlflow.experimentKind"
    KIND_MODEL_TRAINING: Final = "custom_model_development"
    # + a key: a saved runs-page view (columns, sort, charts), opened by ?viewStateShareKey=
    SHARED_VIEW_PREFIX: Final = "mlflow.sharedViewState."


class Artifact:
    """Artifact paths inside a run."""

    CONFIG: Final = "config/config.yaml"
    OVERRIDES: Final = "config/overrides.yaml"
    ERROR: Final = "error.txt"
    # what it takes to rerun a run (pipeline.tracking.runs.environment)
    ENVIRONMENT: Final = "environment/environment.json"
    PATCH: Final = "environment/uncommitted.patch"
    HISTORY: Final = "training/history.csv"
    PER_CLASS: Final = "evaluation/per_class.csv"
    FIGURES_DIR: Final = "figures"
    DATA_DIR: Final = "data"
    COMPARISON_DIR: Final = "comparison"
    REPORT_HTML: Final = "comparison/report.html"  # MLflow's UI renders HTML artifacts
    SEARCH_DIR: Final = "search"  # a study's figures, trials and best experiment
    MODEL_NAME: Final = "model"
    HOLDOUT_PER_CLASS: Final = "holdout/per_class.csv"  # retraining: both models, per letter
    DECISION: Final = "holdout/decision.json"
