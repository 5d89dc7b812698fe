"""What ends a run other than success, without MLflow: `EndRun`, and Ctrl-C and SIGTERM
turned into KeyboardInterrupt (which `lifecycle.OpenRun` ends a run KILLED by)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator, Mapping


class EndRun(Exception):  # noqa: N818 - an outcome, not an error
    """Raised inside a run's block (`lifecycle.OpenRun`) to end the run early as `status`
    with `tags`, not FAILED: a search trial that its pruner stops ends KILLED with
    `pruned=true`."""

    def __init__(
        self, message: str, status: str = "KILLED", tags: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.tags = dict(tags or {})


_stop_requested: list[int] = []  # the signals received while a run was tracked


def raise_interrupt(signum: int, frame: object) -> None:
    """The Ctrl-C and SIGTERM handler: a scheduler stopping the job counts as Ctrl-C, so the
    runs it leaves are marked KILLED. The request is also recorded, for
    `raise_if_stop_requested`."""
    _stop_requested.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def raise_if_stop_requested() -> None:
    """Raise again a Ctrl-C or SIGTERM that Python swallowed: when the signal arrives while a
    finaliser runs (SQLAlchemy and TensorFlow run some during garbage collection), Python
    prints the KeyboardInterrupt as "Exception ignored" and goes on, and training would too."""
    if _stop_requested:
        raise KeyboardInterrupt(f"signal {_stop_requested[-1]}")


@contextlib.contextmanager
def signals_raise_interrupt() -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM go to `raise_interrupt` (in the main thread;
    elsewhere, no change)."""
    _stop_requested.clear()
    stops = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = [signal.signal(s, raise_interrupt) for s in stops]
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for stop, handler in zip(stops, previous, strict=True):
            signal.signal(stop, handler)
