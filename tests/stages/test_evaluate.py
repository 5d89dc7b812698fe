"""The evaluation stage and the figures it feeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import compiled, new_model

from pipeline.reporting import figures as run_figures
from pipeline.stages.data import CLASSES, Split
from pipeline.stages.evaluate import evaluate


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    split = Split(
        rng.integers(0, 256, size=(200, 28, 28), dtype=np.uint8),
        np.arange(200, dtype=np.uint8) % 10,
    )
    model = compiled(new_model(hidden_units=(16,), dropout_rate=0.5, l2_beta=0.1))
    return split, evaluate(model, split, CLASSES), model


def test_metrics_agree_with_predictions(scored) -> None:
    split, ev, model = scored
    assert ev.accuracy == pytest.approx(float((ev.predictions == split.labels).mean()))
    assert ev.probabilities.shape == (200, 10)
    np.testing.assert_allclose(ev.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert ev.metrics() == {
        "test_loss": ev.loss,
        "test_accuracy": ev.accuracy,
        "test_data_loss": ev.data_loss,
    }
    # Keras' loss is the cross-entropy plus the L2 penalty; data_loss is the cross-entropy
    penalty = sum(float(x) for x in model.losses)
    assert penalty > 0.01
    assert ev.loss == pytest.approx(ev.data_loss + penalty, rel=1e-5)
    cross_entropy = -np.log(ev.probabilities[np.arange(200), split.labels]).mean()
    assert ev.data_loss == pytest.approx(cross_entropy, rel=1e-4)


def test_per_class_report_and_confusion(scored) -> None:
    split, ev, _ = scored
    assert list(ev.per_class.index) == list(CLASSES)
    assert {"precision", "recall", "f1-score", "support"} <= set(ev.per_class.columns)
    assert ev.per_class["support"].tolist() == [20] * 10
    assert ev.confusion.shape == (10, 10)
    assert ev.confusion.sum() == 200
    assert np.trace(ev.confusion) == int((ev.predictions == split.labels).sum())


def test_evaluation_is_deterministic(scored) -> None:
    split, _, _ = scored
    model = new_model(hidden_units=(16,), dropout_rate=0.5)
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    first, second = evaluate(model, split, CLASSES), evaluate(model, split, CLASSES)
    np.testing.assert_array_equal(first.probabilities, second.probabilities)
    assert first.loss == second.loss


def test_figures(scored) -> None:
    split, ev, _ = scored
    history = pd.DataFrame(
        {
            "loss": [1.0, 0.5],
            "accuracy": [0.6, 0.8],
            "val_loss": [1.1, 0.7],
            "val_accuracy": [0.5, 0.7],
        },
        index=pd.RangeIndex(1, 3, name="epoch"),
    )
    figures = [
        run_figures.confusion_matrix_figure(ev.confusion, CLASSES),
        run_figures.learning_curves_figure(history, best_epoch=2),
        run_figures.misclassified_figure(split.images, split.labels, ev.predictions, CLASSES),
    ]
    for fig in figures:
        assert fig.axes
    wrong = int((ev.predictions != split.labels).sum())
    assert f"first 48 of {wrong}" in figures[2]._suptitle.get_text()
    assert len(figures[2].axes[0].texts) == 48  # one caption per image shown
