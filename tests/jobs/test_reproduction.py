"""Reproduction's parts: the comparison's verdicts, and a data change stops before training."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient

from pipeline.jobs.reproduction import Reproduction, Row, comparable
from pipeline.jobs.training import run
from pipeline.stages.data import DataError


def test_rows_say_identical_or_by_how_much() -> None:
    rows = [
        Row("test_accuracy", 0.5, 0.5),
        Row("test_loss", 1.25, 1.5),
        Row("nan_metric", math.nan, math.nan),
        Row("new_metric", None, 2.0),
    ]
    assert [r.verdict for r in rows] == [
        "identical",
        "differs by +0.25",
        "identical",
        "missing in the original",
    ]
    assert not Reproduction("a", "b", rows).identical
    assert Reproduction("a", "b", rows[:1]).identical
    table = Reproduction("a", "b", rows).table().splitlines()
    assert table[0].split() == ["metric", "original", "reproduced"]
    assert table[2].split() == ["test_loss", "1.25", "1.5", "differs", "by", "+0.25"]


def test_timings_are_not_compared() -> None:
    metrics = {"test_accuracy": 0.9, "seconds.train": 3.0, "epoch_seconds": 0.2}
    assert comparable(metrics) == {"test_accuracy": 0.9}


def test_a_run_logged_with_float32_noise_compares_at_its_precision() -> None:
    """A run recorded before metrics were rounded (0.9760000109672546) reproduces as the same
    float32 logged now (0.976)."""
    import numpy as np

    before = comparable({"test_accuracy": float(np.float32(0.976))})
    assert Row("test_accuracy", before["test_accuracy"], 0.976).identical


def test_other_data_fails_the_run_before_training(tiny, store_uri: str) -> None:
    cfg = tiny("tracking.experiment=changed")
    with pytest.raises(DataError, match="the data differs from the run's"):
        run(cfg, expected_data_digest="0" * 64)
    client = MlflowClient(store_uri)
    [failed] = client.search_runs(client.get_experiment_by_name("changed").experiment_id)
    assert failed.info.status == "FAILED"
    assert "loss" not in failed.data.metrics  # stopped before the first epoch
