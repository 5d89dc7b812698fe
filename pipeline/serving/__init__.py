"""`python -m pipeline.serve`: a registered model's alias over HTTP, following the alias.

MLflow's scoring protocol (`POST /invocations`), answered by whichever version the alias
points at: a background thread reads the alias every `poll_seconds`, loads a new version when
it moved, checks it and swaps it in between two forward passes (`follower`); concurrent
requests are joined into one forward pass (`batching`); the FastAPI app (`app`) bounds what
it reads and says in one line what it refused; `server.serve` runs it all under uvicorn.
"""

from pipeline.serving.server import serve

__all__ = ["serve"]
