"""Prometheus metrics of one server (`GET /metrics`): requests by path and status, the time
to answer predictions, images and forward passes, the version serving and the swaps.

Each app has its own registry (not prometheus_client's process-wide one), so that two apps in
one process (tests) count apart.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pipeline.serving.versions import Served

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Metrics:
    def __init__(self, paths: frozenset[str]) -> None:
        self.paths = paths  # the app's own: any other path is counted as "other"
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "notmnist_serve_requests", "HTTP requests answered", ["path", "status"], registry=r
        )
        self.latency = Histogram(
            "notmnist_serve_prediction_seconds",
            "time from a prediction request's arrival to its answer, errors included",
            buckets=_LATENCY,
            registry=r,
        )
        self.images = Counter("notmnist_serve_images", "images predicted", registry=r)
        self.batches = Histogram(
            "notmnist_serve_batch_images", "images per forward pass", buckets=_BATCH, registry=r
        )
        self.version = Gauge(
            "notmnist_serve_model_version", "the registered version serving (0: none)", registry=r
        )
        self.swaps = Counter("notmnist_serve_swaps", "versions swapped in", registry=r)

    def swapped(self, served: Served) -> None:
        self.version.set(int(served.version))
        self.swaps.inc()

    def batch(self, images: int) -> None:
        self.images.inc(images)
        self.batches.observe(images)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def middleware(self, app: App) -> App:
        """`app` counting every response by path and status (plain ASGI: no per-request
        task, unlike Starlette's BaseHTTPMiddleware)."""

        async def counted(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            path = scope["path"] if scope["path"] in self.paths else "other"
            status = [500]

            async def send_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_status)
            finally:
                self.requests.labels(path, str(status[0])).inc()
                if path == "/invocations":
                    self.latency.observe(time.perf_counter() - started)

        return counted
