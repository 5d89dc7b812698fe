"""Evaluation stage: test metrics, per-class report and confusion matrix, dropout off."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from pipeline.names import Metric
from pipeline.stages.data import Split
from pipeline.stages.model import flops_per_example
from pipeline.stages.train import TrainResult


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    data_loss: float
    probabilities: np.ndarray
    predictions: np.ndarray
    per_class: pd.DataFrame
    confusion: np.ndarray

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        return {
            f"{prefix}loss": self.loss,
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}data_loss": self.data_loss,
        }

    @property
    def macro_f1(self) -> float:
        """The unweighted mean of the letters' F1 scores: every letter counts the same."""
        return float(self.per_class["f1-score"].mean())


def evaluate(
    model: keras.Model, split: Split, classes: Sequence[str], batch_size: int = 1024
) -> Evaluation:
    """Score a compiled model on `split` in inference mode (Dropout passes values through).

    The loss is what Keras reports: cross-entropy plus the L2 penalty, as in `val_loss`;
    `data_loss` is the cross-entropy alone (see `compile_model`).
    """
    scores = model.evaluate(
        split.images, split.labels, batch_size=batch_size, verbose=0, return_dict=True
    )
    probabilities = model.predict(split.images, batch_size=batch_size, verbose=0)
    predictions = probabilities.argmax(axis=1)
    confusion = confusion_counts(split.labels, predictions, len(classes))
    per_class = per_class_report(confusion, classes)
    return Evaluation(
        loss=float(scores["loss"]),
        accuracy=float(scores["accuracy"]),
        data_loss=float(scores.get(Metric.DATA_LOSS, scores["loss"])),
        probabilities=probabilities,
        predictions=predictions,
        per_class=per_class,
        confusion=confusion,
    )


def confusion_counts(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """Counts of (true, predicted) pairs: true letter by row, predicted by column."""
    pairs = np.asarray(labels, dtype=np.int64) * classes + np.asarray(predictions, dtype=np.int64)
    return np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def per_class_report(confusion: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per letter (0 where undefined: a letter never
    predicted or never present), as scikit-learn's classification report gives them."""
    hits = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)

    def ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        return np.asarray(np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0))

    return pd.DataFrame(
        {
            "precision": ratio(hits, predicted),
            "recall": ratio(hits, actual),
            "f1-score": ratio(2 * hits, predicted + actual),
            "support": actual.astype(int),
        },
        index=pd.Index(list(classes), name="class"),
    )


def summarise(model: keras.Model, result: TrainResult, evaluation: Evaluation) -> dict[str, float]:
    """A run's final metrics: test scores, the kept epoch's valid scores, and the model's size
    and cost (`pipeline.names.Metric` names them)."""
    forward_flops, train_flops = flops_per_example(model)
    best = result.best
    return {
        **evaluation.metrics("test_"),
        Metric.TEST_MACRO_F1: evaluation.macro_f1,
        Metric.BEST_EPOCH: result.best_epoch,
        Metric.EPOCHS_RUN: len(result.history),
        Metric.BEST_VAL_LOSS: float(best[Metric.VAL_LOSS]),
        Metric.BEST_VAL_ACCURACY: float(best[Metric.VAL_ACCURACY]),
        # comparable across L2 settings, unlike best_val_loss (which includes the penalty)
        Metric.BEST_VAL_DATA_LOSS: float(best.get(Metric.VAL_DATA_LOSS, best[Metric.VAL_LOSS])),
        # train accuracy as Keras reports it (mean over the epoch's batches, dropout on)
        Metric.TRAIN_VALID_GAP: float(best[Metric.ACCURACY] - best[Metric.VAL_ACCURACY]),
        Metric.PARAM_COUNT: model.count_params(),
        Metric.FLOPS_FORWARD: forward_flops,
        Metric.FLOPS_TRAIN_STEP: train_flops,
    }
