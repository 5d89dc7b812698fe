"""What a run records: config params."""

from __future__ import annotations

from pipeline.tracking.records import flatten


def test_flatten_dots_nested_keys() -> None:
    flat = flatten({"train": {"early_stopping": {"patience": 3}, "epochs": 2}, "a": 1})
    assert flat == {"train.early_stopping.patience": 3, "train.epochs": 2, "a": 1}
