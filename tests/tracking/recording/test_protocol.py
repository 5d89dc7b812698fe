"""The run recorder's requests: typed, each one carried out by its type, anything else
refused; and what crosses to the helper is what it logs, not the trainer's data."""

from __future__ import annotations

import multiprocessing
import pickle
from typing import get_args

import numpy as np

from pipeline.jobs.training import data_record
from pipeline.stages.data import Dataset, Split
from pipeline.tracking.recording import protocol
from pipeline.tracking.recording.writer import Writer


def _concrete(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= _concrete(sub)
        if sub is not protocol.Asks:
            found.add(sub)
    return found


def test_every_request_type_is_one_the_helper_carries_out() -> None:
    """A request class left out of `Question` or `Record` would be refused by the helper
    (the writer's `match` over them is what mypy checks is exhaustive)."""
    dispatched = set(get_args(protocol.Question)) | set(get_args(protocol.Record))
    assert _concrete(protocol.Request) == dispatched
    assert {r.what for r in dispatched} >= {"config", "dataset", "epoch", "model", "end"}


def test_an_unknown_request_is_refused_in_one_line_and_fails_the_run() -> None:
    """The old string protocol's `(seq, "config", args)`, or anything else not a request."""
    mine, theirs = multiprocessing.Pipe(duplex=True)
    writer = Writer(theirs)
    writer.handle(7, "config")
    seq, ok, line = mine.recv()
    assert (seq, ok) == (7, False)
    assert line.startswith("recording the run (str) failed: TypeError: not a request")
    writer.handle(8, protocol.Sync())  # the run's failure, which its end will record
    assert mine.recv() == (8, True, line)


def _dataset(n: int) -> Dataset:
    rng = np.random.default_rng(0)

    def split(size: int) -> Split:
        images = rng.integers(0, 256, (size, 28, 28), dtype=np.uint8)
        return Split(images, np.arange(size) % 10)

    return Dataset(split(n), split(n // 4), split(n // 4), source="random", format="random")


def test_the_data_record_holds_numbers_not_the_splits() -> None:
    """The card's numbers, the splits' shapes and 100 sample images: the same size for any
    amount of data, where the whole Dataset was pickled to the helper before."""
    small, large = (pickle.dumps(data_record(_dataset(n))) for n in (400, 4000))
    assert len(large) < 1.05 * len(small)
    assert len(large) < len(pickle.dumps(_dataset(4000))) / 20
    record = data_record(_dataset(400))
    train, _, test = record.inputs
    assert (train.name, train.context, train.images) == (
        "random-train",
        "train",
        ((400, 28, 28), "|u1"),
    )
    assert test.labels == ((100,), np.dtype(int).str)
    assert record.tags["data.digest"] == _dataset(400).digest()
    assert record.card.summary["train_size"] == 400
    assert record.samples.draw().axes  # drawn where it is logged
