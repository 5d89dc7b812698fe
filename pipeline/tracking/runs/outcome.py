"""What ends a run other than success, without MLflow: `EndRun`, and Ctrl-C and SIGTERM
turned into KeyboardInterrupt (the trainer's side of a run, in `runs` and `recorder`)."""

from __future__ import annotations

import contextlib
import signal
import traceback
from collections.abc import Callable, Iterator, Mapping


class EndRun(Exception):  # noqa: N818 - an outcome, not an error
    """Raised inside `tracked_run` to end the run early as `status` with `tags`, not FAILED:
    a search trial that its pruner stops ends KILLED with `pruned=true`."""

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


# end(status, message, traceback, tags): how a run ends, as `runs.end_run` takes it
Ending = Callable[[str, str | None, str | None, Mapping[str, str] | None], None]


@contextlib.contextmanager
def ends_as(end: Ending) -> Iterator[None]:
    """Run the block with Ctrl-C and SIGTERM raising KeyboardInterrupt, and if it leaves by
    an exception, `end` the run by it before it goes on: KILLED on an interrupt, as an
    `EndRun` says, else FAILED with the error and its traceback. (Success is the caller's
    to end: it may have more to do first.)"""
    try:
        with signals_raise_interrupt():
            yield
            raise_if_stop_requested()
    except KeyboardInterrupt:
        end("KILLED", "interrupted (Ctrl-C or SIGTERM)", traceback.format_exc(), None)
        raise
    except EndRun as stop:
        end(stop.status, None, None, stop.tags)
        raise
    except BaseException as exc:
        end("FAILED", f"{type(exc).__name__}: {exc}", traceback.format_exc(), None)
        raise
