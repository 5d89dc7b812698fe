"""One forward pass for concurrent requests: each gets its own rows, equal to Keras'
`predict`; the queue is bounded; nothing is queued before a version serves."""

from __future__ import annotations

import datetime
import threading

import keras
import numpy as np
import pytest
from conftest import new_model
from make_sources import letters

from pipeline.serving.batching import Batcher, BusyError, NotReadyError
from pipeline.serving.versions import (
    RegistryRecordError,
    Served,
    batch_function,
    check_on_example,
    checked_run_id,
    checked_version,
)


@pytest.fixture(scope="module")
def network() -> keras.Model:
    keras.utils.set_random_seed(3)
    return new_model(hidden_units=[16], dropout_rate=0.5)


def _served(network: keras.Model) -> Served:
    now = datetime.datetime.now(datetime.UTC)
    return Served("notmnist", "7", None, now, 0.0, batch_function(network))


def test_the_batch_function_equals_keras_predict(network: keras.Model) -> None:
    images = letters(3)[0]
    predict = batch_function(network)
    check_on_example(predict)
    for n in (1, 2, 7, len(images)):
        np.testing.assert_allclose(
            predict(images[:n]), network.predict(images[:n], verbose=0), rtol=1e-5, atol=1e-7
        )


def test_a_network_that_gives_no_probabilities_is_refused() -> None:
    layers = [keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10)]
    logits = keras.Sequential(layers)
    with pytest.raises(ValueError, match="not probabilities"):
        check_on_example(batch_function(logits))
    wide = new_model(num_classes=12, hidden_units=[4])
    with pytest.raises(ValueError, match=r"not \(1, 10\)"):
        check_on_example(batch_function(wide))


def _held(served: Served) -> tuple[Served, threading.Event, threading.Event]:
    """`served` whose first pass starts (`started`), then waits for `release`."""
    started, release = threading.Event(), threading.Event()

    def predict(pixels: np.ndarray) -> np.ndarray:
        if not started.is_set():
            started.set()
            assert release.wait(60)
        return served.predict(pixels)

    return Served("notmnist", "7", None, served.loaded_at, 0.0, predict), started, release


def test_concurrent_requests_share_passes_and_get_their_own_rows(network: keras.Model) -> None:
    passes: list[int] = []
    served, started, release = _held(_served(network))
    batcher = Batcher(lambda: served, max_waiting=64, max_batch_images=16, on_batch=passes.append)
    images = letters(2)[0]
    sizes = [1 + i % 3 for i in range(12)]  # 24 images in all
    try:
        first = batcher.submit(images[:1])
        assert started.wait(30)  # the worker is in its first pass: the rest wait together
        futures = [batcher.submit(images[i : i + n]) for i, n in enumerate(sizes)]
        release.set()
        answers = [f.result(timeout=60) for f in futures]
        first.result(timeout=60)
    finally:
        batcher.close()
    for i, (n, answer) in enumerate(zip(sizes, answers, strict=True)):
        expected = network.predict(images[i : i + n], verbose=0)
        np.testing.assert_allclose(answer.probabilities, expected, rtol=1e-5, atol=1e-7)
        assert answer.served is served
    # the 12 waiting requests in two passes: up to 16 images (and the request that crosses it)
    assert passes == [1, 18, 6]  # 1+2+3+... reaches 16 at 18


def test_the_queue_is_bounded_and_waits_for_a_version(network: keras.Model) -> None:
    served: list[Served] = []
    batcher = Batcher(lambda: served[0] if served else None, max_waiting=1, max_batch_images=8)
    try:
        with pytest.raises(NotReadyError):
            batcher.submit(np.zeros((1, 28, 28), dtype=np.uint8))
        held, started, release = _held(_served(network))
        served.append(held)
        first = batcher.submit(np.zeros((1, 28, 28), dtype=np.uint8))
        assert started.wait(30)  # the worker is busy with it
        waiting = batcher.submit(np.zeros((1, 28, 28), dtype=np.uint8))
        with pytest.raises(BusyError, match="1 requests wait already"):
            batcher.submit(np.zeros((1, 28, 28), dtype=np.uint8))
        release.set()
        assert first.result(timeout=60).probabilities.shape == (1, 10)
        assert waiting.result(timeout=60).probabilities.shape == (1, 10)
    finally:
        batcher.close()


def test_registry_records_are_checked_before_use() -> None:
    assert checked_version(12) == "12"
    assert checked_run_id("0" * 32) == "0" * 32
    assert checked_run_id(None) is None
    assert checked_run_id("") is None
    for bad in ("1; drop", "../2", "", "1.5", "٣"):
        with pytest.raises(RegistryRecordError):
            checked_version(bad)
    for bad in ("A" * 32, "0" * 31, "../../etc/passwd", "0" * 32 + "\n"):
        with pytest.raises(RegistryRecordError):
            checked_run_id(bad)
