"""MLflow plumbing: the store (`store`), a run's life cycle (`runs`), what a run records
(`records`, `models`, `callbacks`) and sweeps as parent runs (`sweep`).

Nothing here imports TensorFlow at import time, so the sweep callback and the report stay
cheap; `callbacks` (a Keras callback) is the exception and is imported by training only.
"""

from pipeline.tracking.store import Store, TrackingError, connect, resolve_tracking_uri

__all__ = ["Store", "TrackingError", "connect", "resolve_tracking_uri"]
