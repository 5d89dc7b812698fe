"""The run recorder's requests: what a trainer asks its helper (`writer`) to do, as data.

Each request is a frozen dataclass, carried out in the order sent and dispatched by its type
(`writer.Writer.carry_out`, a `match` that strict mypy checks is exhaustive; anything else
is refused). A request holds what is logged and no more: numbers, tables, the arrays a
figure draws, never the trainer's own objects (a `Dataset`, a model), so that little crosses
the pipe and the helper imports neither TensorFlow nor the stages.

Two kinds of value are described here by what the helper does with them, and made above
this layer: a `Drawing` (a figure as data, `pipeline.reporting.drawings`), drawn in the
helper, where matplotlib is loaded; and a `Card` (the data card's numbers,
`pipeline.stages.data.card`), written out there. They travel by value; the helper imports
their modules as it reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from pipeline.tracking.store.location import Store

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from pipeline.tracking.models.files import ModelFiles

R = TypeVar("R")


class Drawing(Protocol):
    """A figure as the data it draws."""

    def draw(self) -> Figure: ...


class Card(Protocol):
    """A data card: the data's summary, its tables, and the page that shows them."""

    @property
    def summary(self) -> Mapping[str, Any]: ...
    @property
    def class_counts(self) -> pd.DataFrame: ...
    @property
    def pixel_stats(self) -> pd.DataFrame: ...
    @property
    def skipped(self) -> pd.DataFrame: ...
    def markdown(self) -> str: ...


class Request:
    """What the helper is asked; `what` names it in a failure's one line."""

    what: ClassVar[str]


class Asks(Request, Generic[R]):
    """A request the helper answers with an `R` (or its error), which the sender waits for."""


# -- the store and the run's life ------------------------------------------------------------


@dataclass(frozen=True)
class Open(Asks[Store]):
    """Open the store `tracking` names (a `TrackingConfig`, as JSON) with the trainer's
    MLflow settings of the moment (its `MLFLOW_*` variables)."""

    what = "open"
    tracking: dict[str, Any]
    environment: dict[str, str]


@dataclass(frozen=True)
class Start(Asks[str]):
    """Start (or resume) a run; answered with its id. Every request until `End` is its."""

    what = "start"
    experiment_id: str
    run_name: str | None
    parent_run_id: str | None
    tags: dict[str, str]
    resume_run_id: str | None
    start_ms: int


@dataclass(frozen=True)
class Sync(Asks[str | None]):
    """Answered once every earlier request is carried out: the run's failure, if any."""

    what = "sync"


@dataclass(frozen=True)
class End(Asks[dict[str, Any]]):
    """End the run; answered with how it ended: run_id, status, error and model_uri."""

    what = "end"
    status: str
    message: str | None
    trace: str | None
    tags: dict[str, str]


@dataclass(frozen=True)
class Close(Asks[None]):
    """Answered once every run is ended and written; then the helper exits."""

    what = "close"


# -- a run's records: not answered; a failure fails the run ----------------------------------


@dataclass(frozen=True)
class LogConfig(Request):
    """The config (as JSON), every value a param, and the command's overrides."""

    what = "config"
    config: dict[str, Any]
    overrides: list[str]


@dataclass(frozen=True)
class DataInput:
    """One split as an MLflow dataset input: its identity and its arrays' shapes, which are
    all MLflow records of the arrays when it is given their digest."""

    name: str
    context: str
    digest: str
    images: tuple[tuple[int, ...], str]  # (shape, dtype.str)
    labels: tuple[tuple[int, ...], str]


@dataclass(frozen=True)
class LogData(Request):
    """The data's identity (tags, the holdout overlap, one input per split) and its card."""

    what = "dataset"
    tags: dict[str, str]
    holdout_overlap_removed: int | None
    inputs: tuple[DataInput, ...]
    card: Card
    samples: Drawing


@dataclass(frozen=True)
class LogEpoch(Request):
    """One epoch's values, at `timestamp_ms` (when it ended, in the trainer)."""

    what = "epoch"
    step: int
    values: dict[str, float]
    timestamp_ms: int


@dataclass(frozen=True)
class LogTraining(Request):
    """What training gave, known before evaluation: its history and learning curves."""

    what = "training"
    history: pd.DataFrame
    stopped_early: bool
    learning_curves: Drawing


@dataclass(frozen=True)
class LogModel(Request):
    """The saved network's files, logged as the run's model."""

    what = "model"
    files: ModelFiles


@dataclass(frozen=True)
class LogEvaluation(Request):
    """The final metrics, the per-class report and the test set's figures."""

    what = "evaluation"
    metrics: dict[str, float]
    per_class: pd.DataFrame
    confusion_matrix: Drawing
    misclassified: Drawing


@dataclass(frozen=True)
class LogMetrics(Request):
    """More of the run's metrics (its phases' seconds)."""

    what = "metrics"
    metrics: dict[str, float]


Record = LogConfig | LogData | LogEpoch | LogTraining | LogModel | LogEvaluation | LogMetrics
"""A run's own requests: what `RecordedRun.log` sends."""

Question = Open | Start | Sync | End | Close
"""The requests that are answered."""
