"""The comparison itself, on runs as `mlflow.search_runs` returns them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.reporting.comparison import compare
from pipeline.reporting.figures import curves_figure, heatmap_figure
from pipeline.reporting.render import markdown


def _runs(monitor: str = "val_loss") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": ["a", "b", "c", "d"],
            "status": ["FINISHED", "FINISHED", "FAILED", "FINISHED"],
            "tags.mlflow.runName": ["ra", "rb", "rc", "rd"],
            "tags.error": [None, None, "DataError: boom", None],
            "params.model.l2_beta": ["0.0", "0.001", "0.01", "0.0"],
            "params.model.dropout_rate": ["0.0", "0.0", "0.5", "0.5"],
            "params.train.epochs": ["5", "5", "5", "5"],
            "params.tracking.run_name": ["x", "y", "z", "w"],
            "params.train.early_stopping.monitor": [monitor] * 4,
            "metrics.best_val_loss": [0.5, 0.3, np.nan, 0.4],
            "metrics.best_val_accuracy": [0.8, 0.9, np.nan, 0.95],
            "metrics.test_accuracy": [0.79, 0.88, np.nan, 0.93],
        }
    )


def test_varied_settings_and_order() -> None:
    comparison = compare(_runs())
    assert comparison.varied == ["model.l2_beta", "model.dropout_rate"]  # most values first
    assert comparison.table["run_id"].tolist() == ["b", "d", "a", "c"]  # val_loss up, failed last
    assert comparison.sort_by == "best_val_loss"
    assert comparison.best["run_id"] == "b"
    assert comparison.label(comparison.best) == "model.l2_beta=0.001, model.dropout_rate=0.0"


def test_accuracy_monitor_sorts_descending() -> None:
    comparison = compare(_runs(monitor="val_accuracy"))
    assert comparison.table["run_id"].tolist()[:3] == ["d", "b", "a"]


def test_failures_carry_their_error() -> None:
    failures = compare(_runs()).failures
    assert failures[["run_id", "error"]].to_dict("records") == [
        {"run_id": "c", "error": "DataError: boom"}
    ]


def test_heatmap_over_two_settings_and_markdown() -> None:
    comparison = compare(_runs())
    fig = heatmap_figure(comparison)
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["model.l2_beta", "model.l2_beta"]
    assert [ax.get_xlabel() for ax in fig.axes[:2]] == ["model.dropout_rate"] * 2
    text = markdown(comparison, {"heatmap": "heatmap.png"}, "Sweep")
    assert "4 runs, 3 finished, 1 failed" in text
    assert "![heatmap](heatmap.png)" in text
    assert curves_figure(comparison) is None  # no histories without a client
