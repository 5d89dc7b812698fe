"""Reading a request: the fast path for whole-number pixels gives exactly what the logged
model's `check_images` gives, and leaves everything else to it."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from make_sources import letters
from mlflow.exceptions import MlflowException

from pipeline.serving import payload
from pipeline.serving.payload import RefusedError
from pipeline.tracking.models.classifier import check_images

IMAGES = letters(1)[0][:3]

CASES = {
    "ints": IMAGES.tolist(),
    "one image": IMAGES[0].tolist(),
    "floats": IMAGES.astype(float).tolist(),
    "ints and floats": [IMAGES[0].tolist(), IMAGES[1].astype(float).tolist()],
    "0 and 255 only": [[[0, 255] * 14] * 28],
    "booleans and ints": [[[True, 0] * 14] * 28],
    "booleans": [[[True, False] * 14] * 28],
    "null": [[[None] * 28] * 28],
    "text": [[["7"] * 28] * 28],
    "256": [[[256] * 28] * 28],
    "-1": [[[-1] * 28] * 28],
    "ragged row": [[[0] * 28] * 27 + [[0] * 29]],
    "27 rows": [[[0] * 28] * 27],
    "objects": [[{"a": 1}] * 28],
    "4d": [IMAGES.tolist()],
    "flat": IMAGES.reshape(3, -1).tolist(),
    "empty": [],
    "number": 5,
}


@pytest.mark.parametrize("pixels", CASES.values(), ids=CASES.keys())
def test_every_request_is_judged_as_the_logged_model_judges_it(pixels: object) -> None:
    body = orjson.dumps({"inputs": pixels})
    booleans = b"true" in body or b"false" in body
    try:
        expected = check_images(pixels)
    except MlflowException as exc:
        refusal = exc.message.splitlines()[0]
        with pytest.raises(RefusedError) as refused:
            payload.images(orjson.loads(body), 100, booleans)
        assert (refused.value.status, refused.value.message) == (400, refusal)
        return
    got = payload.images(orjson.loads(body), 100, booleans)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


def test_the_fast_path_takes_whole_numbers_and_nothing_else() -> None:
    fast = payload._whole_bytes(IMAGES.tolist())
    assert fast is not None
    np.testing.assert_array_equal(fast, IMAGES)
    for name in ("floats", "256", "-1", "ragged row", "27 rows", "objects", "4d", "text"):
        batch = CASES[name] if name != "4d" else CASES[name][0:1]
        assert payload._whole_bytes(batch) is None, name


def test_too_many_images_are_counted_before_they_are_read() -> None:
    with pytest.raises(RefusedError) as refused:
        payload.images({"instances": [[[0]]] * 5}, 4, False)
    assert (refused.value.status, refused.value.message) == (
        413,
        "5 images in one request; at most 4 (max_images)",
    )
