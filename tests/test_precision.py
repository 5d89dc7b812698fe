"""Metrics at the precision they have: a float32's value without its noise digits, and
nothing lost."""

from __future__ import annotations

import math

import numpy as np

from pipeline.precision import metric_value, metric_values


def test_a_float32_metric_reads_as_its_shortest_decimal() -> None:
    keras_accuracy = float(np.float32(0.976))  # what a Keras metric is as a Python float
    assert keras_accuracy != 0.976  # 0.9760000109672546: the noise the runs table showed
    assert metric_value(keras_accuracy) == 0.976
    assert repr(metric_value(float(np.float32(1) / np.float32(3)))) == "0.33333334"


def test_no_float32_changes_and_float64_results_stay_as_they_are() -> None:
    rng = np.random.default_rng(0)
    singles = np.concatenate(
        [
            rng.random(20_000, dtype=np.float32),
            (rng.standard_normal(20_000) * 10.0 ** rng.integers(-30, 30, 20_000)).astype(
                np.float32
            ),
        ]
    )
    for single in singles:
        shown = metric_value(float(single))
        assert np.float32(shown) == single  # the same float32: the history is unchanged
        assert len(repr(shown)) <= len(repr(float(single)))
    seconds = 12.345678901234  # a wall time, a float64 mean: more digits than a float32 has
    assert metric_value(seconds) == seconds


def test_whole_numbers_and_non_finite_values_pass_unchanged() -> None:
    big = float(2**25 + 2)  # a count: exact, though past float32's integers
    assert metric_value(big) == big
    assert metric_value(float(2**25)) == 2**25
    assert math.isnan(metric_value(math.nan))
    assert metric_value(math.inf) == math.inf
    assert metric_values({"a": float(np.float32(0.1)), "b": 3.0}) == {"a": 0.1, "b": 3.0}
