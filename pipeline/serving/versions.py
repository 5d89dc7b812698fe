"""One registered version, loaded and checked: what answers a request.

Everything read back from the registry (the version, its run id) is checked like user input
before it is shown or used in a URI; the network is compiled once into a batch function and
run on an example before it may serve.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.stages.data.dataset import CLASSES, IMAGE_SHAPE

Predict = Callable[[np.ndarray], np.ndarray]

_VERSION = re.compile(r"[0-9]{1,12}")
_RUN_ID = re.compile(r"[0-9a-f]{32}")


class RegistryRecordError(ValueError):
    """The registry answered with a version or run id that is not one: never used."""


@dataclass(frozen=True)
class Served:
    """A loaded version: its registry coordinates, when and how fast it loaded, and its
    batch function, (n, 28, 28) uint8 -> (n, 10) float32 probabilities."""

    name: str
    version: str
    run_id: str | None
    loaded_at: datetime.datetime
    load_seconds: float
    predict: Predict

    def describe(self) -> dict[str, Any]:
        """What `GET /version` says about it."""
        return {
            "model_uri": f"models:/{self.name}/{self.version}",
            "version": self.version,
            "run_id": self.run_id,
            "loaded_at": self.loaded_at.isoformat(timespec="seconds"),
            "load_seconds": round(self.load_seconds, 3),
        }


def checked_version(version: object) -> str:
    """A registry version number as a string of digits, or RegistryRecordError."""
    text = str(version)
    if not _VERSION.fullmatch(text):
        raise RegistryRecordError(f"the registry gave version {text[:40]!r}, not a number")
    return text


def checked_run_id(run_id: object) -> str | None:
    """A run id of 32 hex digits, None for a version without a run, or RegistryRecordError."""
    if run_id is None or run_id == "":
        return None
    text = str(run_id)
    if not _RUN_ID.fullmatch(text):
        raise RegistryRecordError(f"the registry gave run id {text[:40]!r}, not 32 hex digits")
    return text


def batch_function(keras_model: Any) -> Predict:
    """The network as one forward pass per call: Keras' `predict_on_batch` (no per-call data
    pipeline or progress bar, unlike `predict`; as fast as a `tf.function` with an input
    signature here, and on any Keras backend)."""

    def predict(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(keras_model.predict_on_batch(pixels), dtype=np.float32)

    return predict


def check_on_example(predict: Predict) -> None:
    """Run the network on a few blank and random images in batches of 1, 2 and 3 (so that
    the traced function takes any batch size, and the first request pays no tracing), and
    refuse it unless every answer is one row of 10 probabilities per image."""
    rng = np.random.default_rng(0)
    for n in (1, 2, 3):
        pixels = rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8)
        pixels[0] = 0
        out = predict(pixels)
        if out.shape != (n, len(CLASSES)):
            raise ValueError(f"gives shape {out.shape} for {n} images, not ({n}, {len(CLASSES)})")
        if not np.isfinite(out).all() or not np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
            raise ValueError("gives values that are not probabilities")


def load_version(name: str, version: str, run_id: str | None, load: Callable[[str], Any]) -> Served:
    """`models:/<name>/<version>` through `load` (`load_keras`), compiled and checked."""
    started = time.perf_counter()
    predict = batch_function(load(f"models:/{name}/{version}"))
    check_on_example(predict)
    return Served(
        name=name,
        version=version,
        run_id=run_id,
        loaded_at=datetime.datetime.now(datetime.UTC),
        load_seconds=time.perf_counter() - started,
        predict=predict,
    )
