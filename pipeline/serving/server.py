"""`serve(settings)`: the follower, the batcher and the app under uvicorn, until SIGINT or
SIGTERM: uvicorn stops taking connections and answers those in flight, then `serve` returns
(exit 0, where uvicorn alone would end the process by the signal once done)."""

from __future__ import annotations

import gc
import logging
import signal
from types import FrameType

from pipeline.config import ServeConfig
from pipeline.config.schema import ALIAS_URI

log = logging.getLogger(__name__)

# images per forward pass when requests are joined (one request of more goes alone): larger
# passes gain little throughput here and cost latency (docs/serving.md)
MAX_BATCH_IMAGES = 256
# Each request of 32 images parses into ~900 lists, so Python's default cyclic collector
# (a young collection every 700 allocations) ran a full one every ~1,000 requests, over
# the millions of objects TensorFlow and MLflow hold: a pause that was most of the p99 (about
# 500 ms with 16 clients; 60-160 ms with these thresholds). The parsed requests are freed by
# reference counting, so fewer collections cost little memory.
GC_THRESHOLDS = (100_000, 50, 100)


class _StoppedError(Exception):
    """SIGINT or SIGTERM, raised once uvicorn has shut down (it raises the signal again)."""


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise _StoppedError(signal.Signals(signum).name)


def serve(settings: ServeConfig) -> None:
    """Serve `settings.model` (models:/<name>@<alias>) on `settings.host:port`, following the
    alias; returns when the server is stopped."""
    import mlflow
    import uvicorn
    from mlflow.tracking import MlflowClient

    from pipeline.serving.app import PATHS, Limits, create_app
    from pipeline.serving.batching import Batcher
    from pipeline.serving.follower import Follower
    from pipeline.serving.metrics import Metrics
    from pipeline.tracking.models.classifier import load_keras
    from pipeline.tracking.store.connect import limit_requests, resolve_tracking_uri

    uri = resolve_tracking_uri(settings.tracking.uri)
    limit_requests(settings.tracking.timeout_seconds, settings.tracking.retries)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    found = ALIAS_URI.fullmatch(settings.model)
    assert found is not None  # (the config's check)
    metrics = Metrics(PATHS)
    follower = Follower(
        MlflowClient(uri, registry_uri=uri),
        found["name"],
        found["alias"],
        load_keras,
        on_swap=metrics.swapped,
    )
    batcher = Batcher(
        lambda: follower.current,
        max_waiting=settings.max_connections,
        max_batch_images=MAX_BATCH_IMAGES,
        on_batch=metrics.batch,
    )
    app = create_app(
        follower, batcher, metrics, Limits(settings.max_images, settings.max_body_bytes)
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            http="httptools",  # (docs/serving.md: 30-40% more requests/s than h11 here)
            limit_concurrency=settings.max_connections,
            access_log=False,  # one line per request would cost more than the request
            log_config=None,  # uvicorn's lines go through this program's logging
            lifespan="off",
            server_header=False,
        )
    )
    log.info(
        "serving %s (store %s) on http://%s:%d, reading the alias every %g s",
        settings.model,
        uri,
        settings.host,
        settings.port,
        settings.poll_seconds,
    )
    gc.set_threshold(*GC_THRESHOLDS)
    follower.start(settings.poll_seconds)
    handlers = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    except _StoppedError as stop:
        log.info("stopped by %s, the requests in flight answered", stop)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        follower.stop()
        batcher.close()
