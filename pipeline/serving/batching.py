"""Concurrent requests joined into one forward pass, as TF Serving and Triton batch them.

One worker thread runs the network. It takes the oldest waiting request, then every other
one already waiting, up to `max_batch_images` images in all, and answers them all with one
call: nothing waits on purpose, so a lone request goes at once, and under load the queue
fills while a pass runs and the next pass takes it all. The version that answers is read once
per pass, so every request is answered wholly by one version. The queue is bounded: a
request that finds it full is refused (`BusyError`, HTTP 503) rather than held in memory.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from pipeline.serving.versions import Served

log = logging.getLogger(__name__)


class BusyError(RuntimeError):
    """Too many requests wait already."""


class NotReadyError(RuntimeError):
    """No version has loaded yet."""


@dataclass(frozen=True)
class Answer:
    """One request's probabilities and the version that computed them."""

    served: Served
    probabilities: np.ndarray  # (n, 10) float32


@dataclass(frozen=True)
class _Job:
    pixels: np.ndarray
    future: Future[Answer]


class Batcher:
    """`submit(pixels)` -> a Future of its `Answer`, computed by `current()` at that moment."""

    def __init__(
        self,
        current: Callable[[], Served | None],
        max_waiting: int,
        max_batch_images: int,
        on_batch: Callable[[int], None] = lambda images: None,
    ) -> None:
        self._current = current
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max_waiting)
        self._max_batch_images = max_batch_images
        self._on_batch = on_batch
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, pixels: np.ndarray) -> Future[Answer]:
        """Queue a request; BusyError when the queue is full, NotReadyError before any
        version serves (once one does, one always does: a swap only replaces it)."""
        if self._current() is None:
            raise NotReadyError("no model is loaded yet")
        future: Future[Answer] = Future()
        try:
            self._queue.put_nowait(_Job(pixels, future))
        except queue.Full:
            raise BusyError(f"{self._queue.maxsize} requests wait already: try again") from None
        return future

    def close(self) -> None:
        """Answer what is queued, then end the worker."""
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, images, closing = [first], len(first.pixels), False
            while images < self._max_batch_images:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    closing = True
                    break
                jobs.append(job)
                images += len(job.pixels)
            self._answer(jobs)
            if closing:
                return

    def _answer(self, jobs: list[_Job]) -> None:
        # a request whose client went away was cancelled: it is dropped unanswered
        jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not jobs:
            return
        served = self._current()
        assert served is not None  # (submit refuses requests until one is)
        pixels = jobs[0].pixels if len(jobs) == 1 else np.concatenate([j.pixels for j in jobs])
        try:
            probabilities = served.predict(pixels)
        except Exception as exc:
            log.exception("version %s failed on %d images", served.version, len(pixels))
            for job in jobs:
                job.future.set_exception(exc)
            return
        self._on_batch(len(pixels))
        start = 0
        for job in jobs:
            end = start + len(job.pixels)
            job.future.set_result(Answer(served, probabilities[start:end]))
            start = end
