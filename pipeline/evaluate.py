"""Evaluation stage: test metrics, per-class report and confusion matrix, dropout off."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
from sklearn.metrics import classification_report, confusion_matrix

from pipeline.data import Split


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    probabilities: np.ndarray
    predictions: np.ndarray
    per_class: pd.DataFrame
    confusion: np.ndarray

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        return {f"{prefix}loss": self.loss, f"{prefix}accuracy": self.accuracy}


def evaluate(
    model: keras.Model, split: Split, classes: Sequence[str], batch_size: int = 1024
) -> Evaluation:
    """Score a compiled model on `split` in inference mode (Dropout passes values through).

    The loss is what Keras reports: cross-entropy plus the L2 penalty, as in `val_loss`.
    """
    loss, accuracy = model.evaluate(split.images, split.labels, batch_size=batch_size, verbose=0)
    probabilities = model.predict(split.images, batch_size=batch_size, verbose=0)
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
        loss=float(loss),
        accuracy=float(accuracy),
        probabilities=probabilities,
        predictions=predictions,
        per_class=per_class,
        confusion=confusion_matrix(split.labels, predictions, labels=labels),
    )
