"""What a prediction request holds and what its answer says, read and written fast.

The body is JSON `{"inputs": ...}` or `{"instances": ...}` (MLflow's scoring protocol), parsed
by orjson (several times faster than the standard library on arrays of numbers). Its images
go through the logged model's own `check_images`, so that what it refuses gets the same
one-line message; the common case, whole numbers 0-255 in lists of 28x28, is first turned
into pixels in one C-level pass (`bytes()` takes nothing else), which is what 32 images a
request spend most of their time on otherwise.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np
import orjson
from mlflow.exceptions import MlflowException

from pipeline.stages.data.dataset import CLASSES, IMAGE_SHAPE
from pipeline.tracking.models.classifier import check_images

KEYS = ("inputs", "instances")
# deeper than a list of images of rows (3), even with room for a client's extra brackets:
# refused before NumPy sees it
MAX_DEPTH = 8


class RefusedError(Exception):
    """A request answered with an HTTP error status and one line."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def too_large(what: str) -> RefusedError:
    return RefusedError(413, "REQUEST_LIMIT_EXCEEDED", what)


def parse(body: bytes) -> Any:
    """The JSON document, or RefusedError(400)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise RefusedError(400, "MALFORMED_REQUEST", "the JSON is nested too deeply") from None
        raise RefusedError(400, "MALFORMED_REQUEST", f"malformed JSON: {exc}") from None


def images(document: Any, max_images: int, booleans: bool) -> np.ndarray:
    """The request's images as (n, 28, 28) uint8, or RefusedError (400; 413 past
    `max_images`). `booleans`: whether the body may hold JSON true/false (then NumPy, as in
    the logged model, decides what they are)."""
    keys = list(document) if isinstance(document, dict) else []
    if len(keys) != 1 or keys[0] not in KEYS:
        shown = f"keys {sorted(k[:40] for k in keys)[:5]}"
        if not isinstance(document, dict):
            shown = f"a JSON {type(document).__name__}"
        raise RefusedError(
            400,
            "BAD_REQUEST",
            'expected a JSON object {"inputs": [...]} or {"instances": [...]} of 28x28 images; '
            f"got {shown}",
        )
    pixels = document[keys[0]]
    batch = _as_batch(pixels)
    if len(batch) > max_images:
        raise too_large(f"{len(batch)} images in one request; at most {max_images} (max_images)")
    fast = None if booleans else _whole_bytes(batch)
    try:
        return check_images(pixels if fast is None else fast)
    except MlflowException as exc:
        raise RefusedError(400, "INVALID_PARAMETER_VALUE", exc.message.splitlines()[0]) from None


def _as_batch(pixels: Any) -> list[Any]:
    """The request's images as a list (one image is a list of one), refusing nesting deeper
    than MAX_DEPTH along the first elements."""
    depth, node = 0, pixels
    while isinstance(node, list) and node:
        depth += 1
        if depth > MAX_DEPTH:
            raise RefusedError(400, "MALFORMED_REQUEST", "the JSON is nested too deeply")
        node = node[0]
    return pixels if depth >= 3 else [pixels]


def _whole_bytes(batch: list[Any]) -> np.ndarray | None:
    """(n, 28, 28) uint8 when every image is 28 lists of 28 integers 0-255; None for anything
    else, which `check_images` then judges (and refuses, or converts, as the model does)."""
    rows, columns = IMAGE_SHAPE
    try:  # (map and set: the shape checked without a Python-level loop)
        if set(map(len, batch)) != {rows} or set(map(len, chain.from_iterable(batch))) != {columns}:
            return None
        flat = bytes(chain.from_iterable(chain.from_iterable(batch)))
    except (TypeError, ValueError):  # not lists, not integers, or outside 0-255
        return None
    return np.frombuffer(flat, dtype=np.uint8).reshape(len(batch), rows, columns)


def predictions(probabilities: np.ndarray) -> bytes:
    """`{"predictions": [{"letter": "C", "probabilities": [A..J]}, ...]}`."""
    best = probabilities.argmax(axis=1).tolist() if len(probabilities) else []
    rows = probabilities.tolist()
    return orjson.dumps(
        {
            "predictions": [
                {"letter": CLASSES[b], "probabilities": p} for b, p in zip(best, rows, strict=True)
            ]
        }
    )


def dumps(content: Any) -> bytes:
    return orjson.dumps(content)
