"""Evaluation stage: test metrics, per-class report and confusion matrix, dropout off."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix

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


# images per inference step, to bound the memory a large split takes: fixed here rather than
# an argument, since it is no setting of the config (and so has no default to drift from)
_BATCH = 1024


def evaluate(model: keras.Model, split: Split, classes: Sequence[str]) -> Evaluation:
    """Score a compiled model on `split` in inference mode (Dropout passes values through).

    The loss is what Keras reports: cross-entropy plus the L2 penalty, as in `val_loss`;
    `data_loss` is the cross-entropy alone (see `compile_model`).
    """
    scores = model.evaluate(
        split.images, split.labels, batch_size=_BATCH, verbose=0, return_dict=True
    )
    probabilities = model.predict(split.images, batch_size=_BATCH, verbose=0)
    predictions = probabilities.argmax(axis=1)
    labels = list(range(len(classes)))
    report = classification_report(
        split.labels,
        predictions,
        labels=labels,
        target_names=list(classes),
        output_dict=True,
        zero_division=0,
    )
    per_class = pd.DataFrame(report).T.loc[list(classes)]
    per_class.index.name = "class"
    per_class["support"] = per_class["support"].astype(int)
    return Evaluation(
        loss=float(scores["loss"]),
        accuracy=float(scores["accuracy"]),
        data_loss=float(scores.get(Metric.DATA_LOSS, scores["loss"])),
        probabilities=probabilities,
        predictions=predictions,
        per_class=per_class,
        confusion=confusion_matrix(split.labels, predictions, labels=labels),
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
