"""The HTTP app: MLflow's scoring protocol, health, version, metrics and a page for people.

`POST /invocations` takes `{"inputs": ...}` or `{"instances": ...}`: one 28x28 image or a list
of them, raw pixels 0-255 (JSON integers or floats), checked as the logged model checks them
(`payload`). It answers `{"predictions": [{"letter": "C", "probabilities": [10 numbers,
A-J]}, ...]}` with the version that answered in `X-Model-Version`. Past `max_images` or
`max_body_bytes`: 413; malformed or too deeply nested JSON: 400; before a model has loaded,
or with the queue full: 503. Every refusal is `{"error_code": ..., "message": <one line>}`,
as MLflow's scoring server words them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from pipeline.serving import payload
from pipeline.serving.batching import Batcher, BusyError, NotReadyError
from pipeline.serving.follower import Follower
from pipeline.serving.metrics import App, Metrics
from pipeline.serving.payload import RefusedError
from pipeline.stages.data.dataset import CLASSES

_JSON = "application/json"
# a refused body is read on to its end (and dropped) up to this much, so that a client that
# sends it whole before it reads (most do) gets the 413 rather than a reset connection
_DRAIN_BYTES = 64 * 2**20
_PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
# the page loads nothing from elsewhere and cannot be framed
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PATHS = frozenset({*_PAGE_FILES, "/invocations", "/ping", "/health", "/version", "/metrics"})


@dataclass(frozen=True)
class Limits:
    max_images: int
    max_body_bytes: int


def create_app(follower: Follower, batcher: Batcher, metrics: Metrics, limits: Limits) -> App:
    """The ASGI app (FastAPI, every response counted by `metrics`)."""
    app = FastAPI(
        title="notMNIST letters",
        docs_url=None,  # FastAPI's docs pages load their scripts from a CDN
        redoc_url=None,
        openapi_url=None,
    )
    page = {
        path: (resources.files(__package__).joinpath("static", name).read_bytes(), kind)
        for path, (name, kind) in _PAGE_FILES.items()
    }

    @app.exception_handler(RefusedError)
    async def refused(request: Request, exc: RefusedError) -> Response:
        return _json(exc.status, {"error_code": exc.code, "message": exc.message})

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        if follower.current is None:
            raise RefusedError(503, "TEMPORARILY_UNAVAILABLE", "no model is loaded yet")
        kind = request.headers.get("content-type", _JSON).split(";")[0].strip().lower()
        if kind != _JSON:
            raise RefusedError(415, "BAD_REQUEST", f"send {_JSON}, not {kind[:80]}")
        body = await _body(request, limits.max_body_bytes)
        booleans = b"true" in body or b"false" in body
        pixels = payload.images(payload.parse(body), limits.max_images, booleans)
        if not len(pixels):
            served = follower.current
            return _predictions(served.version, np.zeros((0, len(CLASSES)), np.float32))
        try:
            future = batcher.submit(pixels)
        except (BusyError, NotReadyError) as exc:
            raise RefusedError(503, "TEMPORARILY_UNAVAILABLE", str(exc)) from None
        answer = await asyncio.wrap_future(future)
        return _predictions(answer.served.version, answer.probabilities)

    @app.get("/ping")
    @app.get("/health")
    async def health() -> Response:
        served = follower.current
        if served is None:
            return _json(503, {"status": "loading", "model": follower.uri})
        return _json(200, {"status": "ok", "version": served.version})

    @app.get("/version")
    async def version() -> Response:
        served = follower.current
        if served is None:
            raise RefusedError(503, "TEMPORARILY_UNAVAILABLE", "no model is loaded yet")
        return _json(200, {"model": follower.uri, **served.describe()})

    @app.get("/metrics")
    async def exposition() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4")

    async def static(request: Request) -> Response:
        content, kind = page[request.url.path]
        return Response(content, media_type=kind, headers=_PAGE_HEADERS)

    for path in _PAGE_FILES:
        app.add_api_route(path, static, methods=["GET"], include_in_schema=False)

    return metrics.middleware(app)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, or RefusedError(413) once past `limit` bytes: never more than
    `limit` bytes held (the rest is read on and dropped, up to `_DRAIN_BYTES`)."""
    refused = payload.too_large(f"the request body is over {limit} bytes (max_body_bytes)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _DRAIN_BYTES:
        raise refused  # not read at all: the connection is closed
    body = bytearray()
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            body.clear()
            if seen > _DRAIN_BYTES:
                break
        else:
            body += chunk
    if seen > limit:
        raise refused
    return bytes(body)


def _predictions(version: str, probabilities: np.ndarray) -> Response:
    response = Response(payload.predictions(probabilities), media_type=_JSON)
    response.headers["X-Model-Version"] = version
    return response


def _json(status: int, content: Any) -> Response:
    return Response(payload.dumps(content), status_code=status, media_type=_JSON)
