"""A run's figures as data: each holds what its figure shows and draws it on request.

The trainer makes them and sends them to the run recorder, which draws them in its own
process (where matplotlib is loaded and the time is not the trainer's). Importing this
module loads no matplotlib: `figures` is imported when a figure is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Samples:
    """A data card's sample images (`stages.data.card.DataCard.samples`)."""

    mosaic: np.ndarray
    classes: Sequence[str]
    data_format: str

    def draw(self) -> Figure:
        from pipeline.reporting.figures import samples_figure

        title = f"Training images per letter ({self.data_format})"
        return samples_figure(self.mosaic, self.classes, title)


@dataclass(frozen=True)
class LearningCurves:
    history: pd.DataFrame
    best_epoch: int

    def draw(self) -> Figure:
        from pipeline.reporting.figures import learning_curves_figure

        return learning_curves_figure(self.history, self.best_epoch)


@dataclass(frozen=True)
class ConfusionMatrix:
    confusion: np.ndarray
    classes: Sequence[str]

    def draw(self) -> Figure:
        from pipeline.reporting.figures import confusion_matrix_figure

        return confusion_matrix_figure(self.confusion, self.classes)


@dataclass(frozen=True)
class Misclassified:
    """The test split and its predictions, of which the figure draws the first mistakes."""

    images: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    classes: Sequence[str]

    def draw(self) -> Figure:
        from pipeline.reporting.figures import misclassified_figure

        return misclassified_figure(self.images, self.labels, self.predictions, self.classes)
