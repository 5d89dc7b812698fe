"""How each of a run's records is logged (besides its model): config, per-epoch metrics, the
data's identity and card, the training's and the evaluation's outcome."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np

from pipeline.names import Artifact, Metric, Tag
from pipeline.precision import metric_value, metric_values

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.data.dataset import Dataset

    from pipeline.tracking.recording.protocol import LogData, LogEvaluation, LogTraining


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'early_stopping': {'patience': 3}}} -> {'train.early_stopping.patience': 3}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_epoch(
    run_id: str, step: int, values: Mapping[str, float], timestamp_ms: int | None = None
) -> None:
    """One epoch's metrics, in one batched call (never one per metric or per step); the time
    is when the epoch ended, where that was measured in another process. Values are logged
    at the precision they have (`pipeline.precision`: 0.976, not 0.9760000109672546)."""
    from mlflow.entities import Metric as Value
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    points = [Value(k, metric_value(v), now, step) for k, v in values.items()]
    MlflowClient().log_batch(run_id, metrics=points, synchronous=True)


def log_config(config: Mapping[str, Any], overrides: Sequence[str] = ()) -> None:
    """Every config value as a dotted param, plus the resolved YAML and the overrides.

    A list longer than `LONG_LIST` items (the 23 fonts of `data.fonts`) is logged as a digest,
    `23 items sha256:1a2b3c4d`: in full it would fill MLflow's params table and compare view,
    while the digest still tells two lists apart. The full list is in config/config.yaml.
    """
    import yaml

    mlflow.log_params({k: _param_value(v) for k, v in flatten(config).items()})
    mlflow.log_text(yaml.safe_dump(dict(config), sort_keys=False), Artifact.CONFIG)
    mlflow.log_text(yaml.safe_dump(list(overrides)), Artifact.OVERRIDES)


LONG_LIST = 4


def _param_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        if len(value) > LONG_LIST:
            digest = hashlib.sha256(json.dumps(list(value), default=str).encode()).hexdigest()
            return f"{len(value)} items sha256:{digest[:8]}"
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def log_data(data: LogData) -> None:
    """Record the data's identity: a SHA-256 over every pixel and label of each split.

    MLflow's own dataset digest hashes only the first 10,000 values; ours is the full
    content (its first 32 hex digits fill MLflow's 36-character digest field). The data card
    (counts, pixel statistics, skipped files, removed duplicates, sample images) goes to data/.
    """
    from mlflow.data.numpy_dataset import from_numpy

    mlflow.set_tags(data.tags)
    if data.holdout_overlap_removed is not None:
        mlflow.log_metric(Metric.HOLDOUT_OVERLAP_REMOVED, data.holdout_overlap_removed)
    for split in data.inputs:
        # Given the digest, MLflow records of the arrays only their shapes and dtypes: the
        # arrays stay with the trainer, and read-only zeros of their shapes stand in for them.
        images, labels = (_stand_in(*split.images), _stand_in(*split.labels))
        dataset = from_numpy(images, targets=labels, name=split.name, digest=split.digest)
        log_input(dataset, context=split.context)
    card = data.card
    folder = Artifact.DATA_DIR
    mlflow.log_text(card.markdown(), f"{folder}/card.md")
    mlflow.log_dict(dict(card.summary), f"{folder}/summary.json")
    log_table(card.class_counts, f"{folder}/class_counts.csv")
    log_table(card.pixel_stats, f"{folder}/pixel_stats.csv")
    log_table(card.skipped, f"{folder}/skipped_files.csv")
    mlflow.log_figure(data.samples.draw(), f"{folder}/samples.png")


def _stand_in(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    return np.broadcast_to(np.zeros((), dtype=np.dtype(dtype)), shape)


def log_input(dataset: Dataset, context: str, attempts: int = 3) -> None:
    """`mlflow.log_input` for the active run, safe when concurrent runs in one experiment log
    the same dataset: MLflow's store looks the dataset up and inserts it without a lock, so
    all but one of the runs that race there get a unique-key violation (400 from a server)
    although nothing is wrong. Trying again finds the dataset the winner inserted."""
    from mlflow.exceptions import MlflowException

    for attempt in range(1, attempts + 1):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException as exc:
            text = str(exc).lower()
            if attempt == attempts or not ("unique" in text or "duplicate" in text):
                raise
            log.info("Dataset %s logged by a concurrent run first; linking it", dataset.name)


def log_metrics(metrics: Mapping[str, float]) -> None:
    """Metrics of the active run, logged once, at the precision they have."""
    mlflow.log_metrics(metric_values(metrics))


def log_table(table: pd.DataFrame, artifact_file: str) -> None:
    mlflow.log_text(table.to_csv(), artifact_file)


def log_training(training: LogTraining) -> None:
    """What training gave, known before evaluation: its history and learning curves."""
    mlflow.set_tag(Tag.STOPPED_EARLY, str(training.stopped_early).lower())
    log_table(training.history.map(metric_value), Artifact.HISTORY)  # as its metrics are logged
    figure = training.learning_curves.draw()
    mlflow.log_figure(figure, f"{Artifact.FIGURES_DIR}/learning_curves.png")


def log_evaluation(evaluation: LogEvaluation) -> None:
    """The run's final metrics, the per-class report and the test set's figures."""
    log_metrics(evaluation.metrics)
    log_table(evaluation.per_class, Artifact.PER_CLASS)
    made = {
        "confusion_matrix": evaluation.confusion_matrix,
        "misclassified": evaluation.misclassified,
    }
    for name, drawing in made.items():
        mlflow.log_figure(drawing.draw(), f"{Artifact.FIGURES_DIR}/{name}.png")
