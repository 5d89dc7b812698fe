"""What a run records besides its per-epoch metrics: config, data identity, outcome."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import mlflow

from pipeline.names import Artifact, Metric, Tag
from pipeline.precision import metric_value, metric_values

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.data.dataset import Dataset as Dataset_

    from pipeline.stages.data import Dataset


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


def log_dataset(dataset: Dataset) -> dict[str, str]:
    """Record the data's identity: a SHA-256 over every pixel and label of each split.

    MLflow's own dataset digest hashes only the first 10,000 values; ours is the full
    content (its first 32 hex digits fill MLflow's 36-character digest field). The data card
    (counts, pixel statistics, skipped files, removed duplicates, sample images) goes to data/.
    """
    from mlflow.data.numpy_dataset import from_numpy

    from pipeline.stages.data.card import data_card

    digests = dataset.digests()
    tags = {
        Tag.DATA_DIGEST: dataset.digest(),
        Tag.DATA_SOURCE: dataset.source[:5000],
        Tag.DATA_FORMAT: dataset.format,
        **{f"{Tag.DATA_DIGEST}.{name}": d for name, d in digests.items()},
    }
    if dataset.report.source_digest:
        tags[Tag.DATA_SOURCE_DIGEST] = dataset.report.source_digest
    mlflow.set_tags(tags)
    if dataset.report.holdout_overlap_removed is not None:
        mlflow.log_metric(Metric.HOLDOUT_OVERLAP_REMOVED, dataset.report.holdout_overlap_removed)
    for name, split in dataset.splits():
        log_input(
            from_numpy(
                split.images,
                targets=split.labels,
                name=f"{dataset.format}-{name}",
                digest=digests[name][:32],
            ),
            context=name,
        )
    card = data_card(dataset)
    folder = Artifact.DATA_DIR
    mlflow.log_text(card.markdown(), f"{folder}/card.md")
    mlflow.log_dict(card.summary, f"{folder}/summary.json")
    log_table(card.class_counts, f"{folder}/class_counts.csv")
    log_table(card.pixel_stats, f"{folder}/pixel_stats.csv")
    log_table(card.skipped, f"{folder}/skipped_files.csv")
    mlflow.log_figure(card.samples, f"{folder}/samples.png")
    return tags


def log_input(dataset: Dataset_, context: str, attempts: int = 3) -> None:
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


def log_training(history: pd.DataFrame, best_epoch: int, stopped_early: bool) -> None:
    """What training gave, known before evaluation: its history and learning curves."""
    from pipeline.reporting import figures

    mlflow.set_tag(Tag.STOPPED_EARLY, str(stopped_early).lower())
    log_table(history.map(metric_value), Artifact.HISTORY)  # as its metrics are logged
    figure = figures.learning_curves_figure(history, best_epoch)
    mlflow.log_figure(figure, f"{Artifact.FIGURES_DIR}/learning_curves.png")


def log_evaluation(
    metrics: Mapping[str, float], evaluation: Mapping[str, Any], dataset: Dataset
) -> None:
    """The run's final metrics, the per-class report and the test set's figures.
    `evaluation` holds the test set's `per_class` table, `confusion` matrix and
    `predictions` (plain values: this runs where the model's classes are not imported)."""
    from pipeline.reporting import figures

    log_metrics(metrics)
    log_table(evaluation["per_class"], Artifact.PER_CLASS)
    made = {
        "confusion_matrix": figures.confusion_matrix_figure(
            evaluation["confusion"], dataset.classes
        ),
        "misclassified": figures.misclassified_figure(
            dataset.test.images, dataset.test.labels, evaluation["predictions"], dataset.classes
        ),
    }
    for name, figure in made.items():
        mlflow.log_figure(figure, f"{Artifact.FIGURES_DIR}/{name}.png")
