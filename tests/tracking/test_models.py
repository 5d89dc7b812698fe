"""The logged model's input check: every exact form of 0-255 pixels passes, anything else is
refused with a first line that says what was expected (never a dump of the array)."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from pipeline.tracking.models import check_images

PIXELS = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28)).astype(np.uint8)
EXPECTED = "expected images of shape (n, 28, 28)"


@pytest.mark.parametrize(
    "images",
    [
        PIXELS,
        PIXELS.astype(np.int64),
        PIXELS.astype(np.int32),
        PIXELS.astype(np.float32),
        PIXELS.astype(np.float64),
        list(PIXELS),  # a list of 28x28 arrays
        PIXELS.tolist(),  # JSON integers
        PIXELS.astype(float).tolist(),  # JSON floats
    ],
    ids=["uint8", "int64", "int32", "float32", "float64", "list", "json-int", "json-float"],
)
def test_pixels_0_255_in_any_exact_form_pass_unchanged(images) -> None:
    checked = check_images(images)
    assert checked.dtype == np.uint8
    np.testing.assert_array_equal(checked, PIXELS)


def test_one_image_is_a_batch_of_one() -> None:
    assert check_images(PIXELS[0]).shape == (1, 28, 28)


def _refusal(images) -> str:
    with pytest.raises(MlflowException) as caught:
        check_images(images)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"  # HTTP 400 when served
    first = caught.value.message.splitlines()[0]
    assert first.startswith(EXPECTED)
    assert "[[" not in caught.value.message  # no array dump
    return first


@pytest.mark.parametrize(
    ("images", "said"),
    [
        (PIXELS / 255.0, "look scaled to 0-1"),
        ((PIXELS > 127).astype(float), "look scaled to 0-1"),  # 0.0 and 1.0 only: still scaled
        (PIXELS.astype(float) * 0.999 + 0.1, "whole numbers"),  # fractions, not truncated
        (PIXELS.astype(float) + 300, "got values from 300.0"),
        (PIXELS.astype(np.int64) - 1, "got values from -1"),
        (PIXELS.reshape(3, 784), "got shape (3, 784)"),
        (PIXELS[:, :14], "got shape (3, 14, 28)"),
        ([PIXELS[0], PIXELS[0, :14]], "unequal lengths"),
        ([[["a"] * 28] * 28], "not numbers"),
        (np.full((1, 28, 28), np.nan), "got values from nan"),
    ],
    ids=[
        *("scaled", "scaled-binary", "fractional", "above", "below"),
        *("flat", "cropped", "ragged", "text", "nan"),
    ],
)
def test_bad_input_is_refused_with_what_was_expected_first(images, said: str) -> None:
    first = _refusal(images)
    assert said in first
    assert "0-255" in first


def test_the_scoring_servers_rewrite_cannot_push_a_dump_in_front() -> None:
    """The server sets `message = f"Failed to predict data '{data}'. Error: {message}"`."""
    with pytest.raises(MlflowException) as caught:
        check_images(PIXELS / 255.0)
    error = caught.value
    original = error.message
    error.message = f"Failed to predict data '{PIXELS.tolist()}'. \nError: {error.message}"
    assert error.message == original
    assert error.serialize_as_json().startswith('{"error_code": "INVALID_PARAMETER_VALUE"')
