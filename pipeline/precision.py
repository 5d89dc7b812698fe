"""Metrics at the precision they have.

Keras computes its metrics in float32; as a Python float, a float32 0.976 is
0.9760000109672546, and MLflow's runs table shows those noise digits. `metric_value` gives a
float32's value as the shortest decimal that reads back as the same float32 (0.976), so
nothing is lost: `np.float32(metric_value(x)) == np.float32(x)` for every float32 `x`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np


def metric_value(value: float) -> float:
    """`value` as the shortest decimal of its float32 when it is a float32's value (and not a
    whole number, which stays exact whatever its size); any other value as it is."""
    number = float(value)
    if not math.isfinite(number) or number.is_integer():
        return number
    single = np.float32(number)
    if float(single) != number:  # a float64 result (a time, a mean of many): keep it
        return number
    return float(np.format_float_positional(single, unique=True, trim="0"))


def metric_values(values: Mapping[str, float]) -> dict[str, float]:
    """Every value of `values` through `metric_value`."""
    return {key: metric_value(value) for key, value in values.items()}
