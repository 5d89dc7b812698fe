"""Typed configuration: the schema every Hydra-composed config must satisfy.

Hydra composes `conf/` into a plain tree; `validate` turns it into these frozen models so
that a typo, a wrong type or an out-of-range value stops the program before any work, with
one line that names the key. Stages never see this module: the jobs unpack the fields into
the stages' keyword arguments (`pipeline.jobs.training`), which have no defaults of their own.

One source of defaults: the YAML under conf/. It is what a Hydra user reads, overrides and
sees with `--cfg job`, and a config group (model=logreg) is a set of defaults that a single
default in Python could not express. So the sections Hydra composes (`AppConfig` and the
other commands' configs) give each field its type, bounds and description, and no default
value that could drift from the YAML: a key the YAML lacks is a `missing key` error, a key the
schema lacks an `unknown key` one (tests/config/test_defaults.py holds the composed defaults to
the schema both ways). Only the settings of commands that Hydra does not compose (report,
reproduce, maintenance, a search space's `ParamSpec`: read from the command line by
`from_args`) have their defaults here, the one place they are written.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from pipeline.config.paths import config_dir
from pipeline.errors import ConfigError as ConfigError  # re-exported: the config's own error
from pipeline.names import SourceFormat as SourceFormat  # re-exported: data.format's values

# Strict types: `train.seed=true` is not the seed 1, `data.cache=1` is not true, and a quoted
# `'3'` is not a number (an int is still a float: `learning_rate=1` is 1.0).
Int = Annotated[int, Field(strict=True)]
Float = Annotated[float, Field(strict=True)]
Bool = Annotated[bool, Field(strict=True)]
Fraction = Annotated[float, Field(strict=True, ge=0.0, lt=1.0)]
NonNegative = Annotated[float, Field(strict=True, ge=0.0)]
Positive = Annotated[float, Field(strict=True, gt=0.0)]
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0)]
# NumPy, scikit-learn and Keras take seeds in [0, 2**32): outside it they fail mid-run.
Seed = Annotated[int, Field(strict=True, ge=0, lt=2**32)]


def _not_bool(value: Any) -> Any:
    """`Literal[0, 1]` takes True as 1 (True == 1 in Python): refused like any other bool."""
    if isinstance(value, bool):
        raise ValueError("expected a number or a word, not true/false")
    return value


_M = TypeVar("_M", bound=BaseModel)


class _Section(BaseModel):
    # inf and nan pass `ge`/`gt` checks and then crash Keras or train to NaN: refused
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SyntheticDataConfig(_Section):
    """Letters rendered from matplotlib's bundled fonts (`pipeline.stages.data.synthetic`)."""

    source: Literal["synthetic"] = Field(description="the data group's kind (data=<option>)")
    train_size: PositiveInt = Field(description="training images")
    valid_size: PositiveInt = Field(description="validation images (early stopping, ranking)")
    test_size: PositiveInt = Field(description="test images (the reported accuracy)")
    seed: Seed = Field(description="rendering seed: the same seed gives the same bytes")
    fonts: Annotated[tuple[str, ...], Field(min_length=1)] = Field(
        description="faces under matplotlib's mpl-data/fonts/ttf to draw A-J with"
    )
    max_rotation_deg: Annotated[float, Field(strict=True, ge=0.0, le=45.0)] = Field(
        description="each letter is rotated by up to +- this many degrees"
    )
    max_shear: Annotated[float, Field(strict=True, ge=0.0, le=1.0)] = Field(
        description="and sheared by up to this much"
    )
    min_scale: Annotated[float, Field(strict=True, gt=0.0, le=1.0)] = Field(
        description="and stretched to between this and all of the frame, per axis"
    )
    max_shift: NonNegative = Field(description="and shifted by up to this many pixels")
    noise_std: NonNegative = Field(description="Gaussian pixel noise (0-255 levels)")
    cache: Bool = Field(description="keep rendered images (the same bytes either way)")
    cache_dir: str | None = Field(
        description="the cache's folder (null: $PIPELINE_CACHE_DIR, else <project>/.cache/data)"
    )

    def distortions(self) -> dict[str, float]:
        """The per-image distortions, as `render_letters` takes them."""
        return self.model_dump(
            include={"max_rotation_deg", "max_shear", "min_scale", "max_shift", "noise_std"}
        )


def _count_or_fraction(value: int | float) -> int | float:
    if value <= 0 or (value >= 1 and value != int(value)):
        raise ValueError("give a count (a whole number >= 1) or a fraction (0 < f < 1)")
    return int(value) if value >= 1 else value


SplitSize = Annotated[Int | Float, AfterValidator(_count_or_fraction)]


class NotMnistDataConfig(_Section):
    """Real notMNIST from a file, a folder or a download (`pipeline.stages.data.notmnist`)."""

    source: Literal["notmnist"] = Field(description="the data group's kind (data=<option>)")
    path: str | None = Field(
        description="a .tar.gz of A/ ... J/ PNG folders or its unpacked folder, an "
        "*images-idx3-ubyte[.gz] file (labels beside it), a folder holding one of these, or "
        "the course's .pickle"
    )
    format: SourceFormat = Field(description="how to read data.path (auto: from what it is)")
    url: str | None = Field(description="download this instead of reading data.path (cached)")
    expected_size: PositiveInt | None = Field(description="bytes the download must have")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = Field(
        description="and its SHA-256, when known"
    )
    allow_pickle: Bool = Field(
        description="read a .pickle (loading one runs whatever code it holds: only your own)"
    )
    convert: Bool = Field(
        description="images not 28x28 greyscale: converted (true) or an error (false)"
    )
    train_size: SplitSize = Field(description="a count (>= 1) or a fraction (< 1) of the images")
    valid_size: SplitSize = Field(description="likewise, for validation")
    test_size: SplitSize = Field(description="likewise, for the test split")
    seed: Seed = Field(description="the split's seed")
    near_duplicate_rmsd: NonNegative | None = Field(
        description="also drop valid/test images within this RMS pixel distance (0-255) of a "
        "training image (null: exact duplicates only)"
    )
    cache: Bool = Field(description="keep decoded images, keyed by the source's content")
    cache_dir: str | None = Field(
        description="the cache's folder (null: $PIPELINE_CACHE_DIR, else <project>/.cache/data)"
    )
    max_member_bytes: PositiveInt = Field(
        description="refuse an archive member or file bigger than this (a decompression bomb)"
    )
    max_total_bytes: PositiveInt = Field(
        description="refuse a source that unpacks to more than this in all"
    )
    exclude_path: str | None = Field(
        description="a frozen evaluation set: source images with exactly its pixels are "
        "dropped before the split, and counted (set by retrain)"
    )
    exclude_format: SourceFormat = Field(description="how to read data.exclude_path")

    @model_validator(mode="after")
    def _has_source_and_room(self) -> NotMnistDataConfig:
        if self.path is None and self.url is None:
            raise ValueError(
                "data=notmnist needs data.path=<.tar.gz, A-J folder, IDX file or folder, "
                "or .pickle> or data.url=<download>"
            )
        fractions = [s for s in (self.train_size, self.valid_size, self.test_size) if s < 1]
        if sum(fractions) > 1:
            raise ValueError(f"the split fractions add up to {sum(fractions):g} > 1")
        return self


DataConfig = Annotated[SyntheticDataConfig | NotMnistDataConfig, Field(discriminator="source")]


class AugmentConfig(_Section):
    """Random training-time distortions (Keras preprocessing layers, inert at inference); all
    0 (the default) adds no layer, so the model is exactly the one without augmentation."""

    shift: Annotated[float, Field(strict=True, ge=0.0, le=0.5)] = Field(
        description="random shift by up to this fraction of the image, each axis (0: off)"
    )
    rotation_deg: Annotated[float, Field(strict=True, ge=0.0, le=180.0)] = Field(
        description="random rotation by up to +- this many degrees (0: off)"
    )
    zoom: Annotated[float, Field(strict=True, ge=0.0, lt=1.0)] = Field(
        description="random zoom by up to +- this fraction (0: off)"
    )


class ModelConfig(_Section):
    """Dense + ReLU + Dropout stack; `hidden_units: []` is multinomial logistic regression."""

    name: str = Field(description="the network's name (Keras, MLflow's model page)")
    hidden_units: tuple[PositiveInt, ...] = Field(
        description="ReLU units per hidden layer ([]: logistic regression, 7850 parameters)"
    )
    dropout_rate: Fraction = Field(
        description="fraction of each hidden layer's units dropped while training"
    )
    # Keras computes the penalty in float32: a beta past its range (1e300) cannot even be
    # built, and far below that every weight is pushed to 0 at once; 100 is past any use.
    l2_beta: Annotated[float, Field(strict=True, ge=0.0, le=100.0)] = Field(
        description="L2 on every kernel: loss + beta/2 * ||W||^2"
    )
    augment: AugmentConfig = Field(description="training-time distortions (model/augment=)")


class LearningRateDecay(_Section):
    """Exponential decay `lr * rate ** (step / steps)`; rate 1.0 keeps the rate constant."""

    rate: Annotated[float, Field(strict=True, gt=0.0, le=1.0)] = Field(
        description="lr * rate ** (step / steps); 1.0 keeps the rate constant"
    )
    steps: PositiveInt = Field(description="training steps per decay by `rate`")
    staircase: Bool = Field(description="decay in whole steps of `steps`, not smoothly")


class EarlyStoppingConfig(_Section):
    """Early termination: stop when `monitor` stops improving; the best epoch's weights stay."""

    enabled: Bool = Field(description="stop early (false: run every epoch)")
    monitor: Literal["val_loss", "val_accuracy", "loss", "accuracy"] = Field(
        description="what must improve (val_loss includes the L2 penalty)"
    )
    patience: NonNegativeInt = Field(description="epochs without improvement before stopping")
    min_delta: NonNegative = Field(description="the least change that counts as improvement")


class TrainConfig(_Section):
    """Mini-batch training with early termination on the validation set."""

    epochs: PositiveInt = Field(description="the most epochs to train")
    batch_size: PositiveInt = Field(description="images per training step")
    seed: Seed = Field(description="weights, dropout and shuffling: the same seed, same run")
    optimizer: Literal["sgd", "momentum", "adam"] = Field(description="the update rule")
    # float32 too; plain SGD diverges above about 10 here (conf/search/pruning.yaml goes to 100)
    learning_rate: Annotated[float, Field(strict=True, gt=0.0, le=10_000.0)] = Field(
        description="the step size (at the start, with lr_decay)"
    )
    momentum: Fraction = Field(description="used by optimizer=momentum")
    lr_decay: LearningRateDecay = Field(description="exponential learning-rate decay")
    early_stopping: EarlyStoppingConfig = Field(description="early termination")
    steps_per_execution: PositiveInt = Field(
        description="batches per compiled call: the same maths with less Python per step"
    )
    verbose: Annotated[Literal["auto", 0, 1, 2], BeforeValidator(_not_bool)] = Field(
        description="Keras' progress: auto (a bar on a terminal, a line per epoch otherwise)"
    )
    resume: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] | None = Field(
        description="a killed run's id: continue it from its last epoch, with its own config"
    )


class TrackingConfig(_Section):
    """Where runs are recorded (MLflow)."""

    uri: str | None = Field(
        description="the store: null = SQLite under <project>/mlruns ($MLFLOW_TRACKING_URI "
        "wins), sqlite:///path.db, postgresql://..., or a server http://host:5000"
    )
    experiment: Annotated[str, Field(min_length=1)] = Field(description="MLflow experiment")
    run_name: str | None = Field(description="the run's name (null: MLflow picks one)")
    artifact_location: str | None = Field(
        description="a new experiment's artifacts (null: beside a SQLite store, "
        "<project>/mlruns/artifacts for a database, the server's own otherwise)"
    )
    log_model: Bool = Field(description="log the trained model (for predict, the registry)")
    timeout_seconds: Positive = Field(
        description="the total time allowed to reach the store before a one-line error"
    )
    retries: Annotated[int, Field(strict=True, ge=0, le=10)] = Field(
        description="retried requests to a server within that time (and per later request)"
    )


class AppConfig(_Section):
    """A training run's config: one section per stage, and where it is recorded."""

    data: DataConfig = Field(description="the data (data=synthetic|notmnist|...)")
    model: ModelConfig = Field(description="the network (model=mlp|logreg|deep)")
    train: TrainConfig = Field(description="training (train=sgd)")
    tracking: TrackingConfig = Field(description="where runs are recorded")


class HoldoutConfig(_Section):
    """The frozen evaluation set every challenger and champion is scored on."""

    path: str | None = Field(
        description="the frozen evaluation set (required by retrain): any source data=notmnist "
        "reads"
    )
    format: SourceFormat = Field(description="how to read it (auto: from what it is)")
    allow_pickle: Bool = Field(description="read a .pickle holdout (it runs code: only yours)")


class RetrainConfig(_Section):
    """`python -m pipeline.retrain`: when to train, and the gate a challenger must pass."""

    holdout: HoldoutConfig = Field(description="the frozen holdout both models are scored on")
    force: Bool = Field(
        description="train even when a version was trained on the same data and config"
    )
    min_delta: Annotated[float, Field(strict=True, ge=-1.0, le=1.0)] = Field(
        description="promote when challenger accuracy >= champion accuracy + min_delta"
    )
    max_letter_drop: Annotated[float, Field(strict=True, ge=0.0, le=1.0)] = Field(
        description="... and no letter's holdout accuracy falls by more than this"
    )
    experiment: Annotated[str, Field(min_length=1)] = Field(
        description="the experiment of the audit trail (a run per attempt)"
    )
    lock: str | None = Field(
        description="postgresql://...: a lock across machines (null: a file lock beside a "
        "local store, on this machine for a server)"
    )


class RegistryConfig(_Section):
    """The registered model whose `champion` alias retraining moves."""

    model_name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")] = Field(
        description="the registered model's name"
    )


class ScheduleConfig(_Section):
    """`python -m pipeline.schedule`: a cron expression (5 fields), or every `interval_s`."""

    cron: str = Field(description="when to retrain: minute hour day month weekday")
    interval_s: Annotated[float, Field(strict=True, gt=0.0)] | None = Field(
        description="seconds between retrains instead of cron (tests, demos)"
    )
    misfire_grace_s: PositiveInt = Field(
        description="a retrain missed by up to this long (the machine asleep) still runs, once"
    )
    timezone: str = Field(description="the cron expression's time zone")
    run_now: Bool = Field(description="retrain once at start, then on the schedule")

    @model_validator(mode="after")
    def _valid_cron(self) -> ScheduleConfig:
        if self.interval_s is None and len(self.cron.split()) != 5:
            raise ValueError(
                f"schedule.cron={self.cron!r} is not a 5-field cron expression "
                "(minute hour day month weekday)"
            )
        return self


class RetrainAppConfig(AppConfig):
    """The retrain, schedule and registry commands: the training config plus their own."""

    retrain: RetrainConfig = Field(description="when to train, and the promotion gate")
    registry: RegistryConfig = Field(description="the registered model")
    schedule: ScheduleConfig = Field(description="schedule: when to call retrain")

    def training(self) -> AppConfig:
        """The config of the training run: the four training sections, as `python -m
        pipeline` would get them."""
        return AppConfig(data=self.data, model=self.model, train=self.train, tracking=self.tracking)


class PredictConfig(_Section):
    """`python -m pipeline.predict` (conf/predict/predict.yaml)."""

    model: Annotated[str, Field(min_length=1)] = Field(
        description="any model URI MLflow accepts: models:/notmnist@champion, "
        "models:/notmnist/3, models:/m-<id>, runs:/<run id>/model (required)"
    )
    input: Annotated[str, Field(min_length=1)] = Field(
        description="a PNG, a folder of PNGs (any layout), a .tar.gz of PNGs, or an IDX "
        "images file (required)"
    )
    output: Annotated[str, Field(min_length=1)] | None = Field(
        description="the CSV to write, columns file, letter, probability (null: "
        "outputs/predictions/<input's name>.csv, which git ignores)"
    )
    convert: Bool = Field(description="convert PNGs of another size or mode instead of skipping")
    batch_size: PositiveInt = Field(description="images per prediction step")
    tracking_uri: str | None = Field(
        description="where models:/ URIs are looked up (null: $MLFLOW_TRACKING_URI, else the "
        "project's store)"
    )
    # the data stage's caps; None: its defaults (pipeline.stages.data.sources, the one place
    # they are set)
    max_member_bytes: PositiveInt | None = Field(
        description="refuse an input file bigger than this (null: the data stage's 64 MiB)"
    )
    max_total_bytes: PositiveInt | None = Field(
        description="refuse inputs adding up to more than this (null: the data stage's 1 GiB)"
    )

    @model_validator(mode="before")
    @classmethod
    def _required(cls, raw: Any) -> Any:
        if isinstance(raw, Mapping):
            if raw.get("model") is None:
                raise ValueError(
                    "model=<URI> is required: models:/notmnist@champion, models:/notmnist/3, "
                    "models:/m-<id> or runs:/<run id>/model"
                )
            if raw.get("input") is None:
                raise ValueError(
                    "input=<path> is required: a PNG, a folder of PNGs, a .tar.gz of PNGs "
                    "or an *idx3-ubyte[.gz] images file"
                )
        return raw


RunId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class ReportConfig(_Section):
    """`notmnist report`: which runs to compare, and where the report goes."""

    run_id: RunId | None = Field(None, description="a sweep's parent run: compare its children")
    experiment: str | None = Field(None, description="or compare every run of this experiment")
    out: str | None = Field(
        None, description="the report file, .md or .html (null: reports/<id or name>.html)"
    )
    tracking_uri: str | None = Field(
        None, description="the store (null: $MLFLOW_TRACKING_URI, else the project's mlruns/)"
    )

    @model_validator(mode="after")
    def _one_of(self) -> ReportConfig:
        if (self.run_id is None) == (self.experiment is None):
            raise ValueError("give run_id=<sweep parent run id> or experiment=<name>")
        return self


class DataLocation(_Section):
    """Where a rerun's data is now, and the opt-ins its record asks for (all: as logged)."""

    path: str | None = Field(None, description="the data source's path now")
    url: str | None = Field(None, description="allow the download the record names")
    format: SourceFormat | None = Field(None, description="how to read data.path")
    allow_pickle: Bool | None = Field(None, description="allow the pickle the record names")
    cache_dir: str | None = Field(None, description="the decoded-image cache's folder")
    exclude_path: str | None = Field(None, description="the frozen holdout's path now")
    exclude_format: SourceFormat | None = Field(None, description="how to read it")


class ReproduceConfig(_Section):
    """`notmnist reproduce <run id>`."""

    run_id: RunId = Field(description="the run to rerun (positional)")
    at_commit: Bool = Field(
        False,
        description="rerun the run's own code: its commit and recorded uncommitted change, "
        "in a temporary git worktree (false: today's code)",
    )
    patch: Annotated[str, Field(pattern=r"^[0-9a-f]{12,64}$")] | None = Field(
        None,
        description="with at_commit: the sha256 (12 hex digits or more) of the run's recorded "
        "uncommitted change, once reviewed: it runs as code, and anyone who can write to the "
        "run can write it, so it is applied only when granted here",
    )
    data: DataLocation = Field(DataLocation(), description="data settings given anew")
    tracking_uri: str | None = Field(
        None, description="the store (null: $MLFLOW_TRACKING_URI, else the project's mlruns/)"
    )


class MaintenanceConfig(_Section):
    """`notmnist maintenance stale-runs`."""

    action: Literal["stale-runs"] = Field(description="what to do (positional)")
    kill: Bool = Field(False, description="mark the runs whose process is gone KILLED")
    experiment: str | None = Field(None, description="only this experiment (null: all)")
    tracking_uri: str | None = Field(
        None, description="the store (null: $MLFLOW_TRACKING_URI, else the project's mlruns/)"
    )


class ParamSpec(_Section):
    """How a search draws one setting: `float`/`int` uniform, `log_float`/`log_int` uniform
    in log space (`low` > 0), or one of `choices` (any YAML values, lists included)."""

    kind: Literal["float", "log_float", "int", "log_int", "categorical"] = Field(
        description="how the value is drawn"
    )
    low: Float | None = Field(None, description="the least value (float, int kinds)")
    high: Float | None = Field(None, description="the greatest value")
    step: Positive | None = Field(None, description="draw multiples of this from low")
    choices: Annotated[tuple[Any, ...], Field(min_length=1)] | None = Field(
        None, description="the values to choose from (categorical)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.kind == "categorical":
            if self.choices is None or self.low is not None or self.high is not None:
                raise ValueError("kind categorical takes choices: [...] (and no low/high)")
            return self
        if self.low is None or self.high is None or self.choices is not None:
            raise ValueError(f"kind {self.kind} takes low and high (and no choices)")
        if self.low >= self.high:
            raise ValueError(f"low={self.low:g} must be below high={self.high:g}")
        if self.kind.startswith("log") and (self.low <= 0 or self.step is not None):
            raise ValueError(f"kind {self.kind} needs low > 0 and no step")
        if self.kind.endswith("int") and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(f"kind {self.kind} needs whole numbers for low and high")
        return self

    def extremes(self) -> list[tuple[str, Any]]:
        """(label, value) of every value the space can reach at its edges, to check them."""
        if self.choices is not None:
            return [(f"choices[{i}]", c) for i, c in enumerate(self.choices)]
        assert self.low is not None
        assert self.high is not None
        cast = int if self.kind.endswith("int") else float
        return [("low", cast(self.low)), ("high", cast(self.high))]


StudyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _export_path(value: str) -> str:
    """`search.export`: a folder, or a YAML file in a folder named `experiment`, since Hydra
    finds `experiment=<name>` only as `experiment/<name>.yaml` in a config folder."""
    from pathlib import PurePath

    if not value.strip():
        raise ValueError("give a folder or a .../experiment/<name>.yaml file")
    path = PurePath(value)
    if path.suffix in (".yaml", ".yml"):
        if path.parent.name != "experiment":
            raise ValueError(
                f"an experiment file goes in a folder named experiment/ (Hydra finds "
                f"experiment=<name> there): give the folder ({path.parent}) or "
                f"{path.parent / 'experiment' / path.name}"
            )
        if path.suffix != ".yaml" or not _NAME.fullmatch(path.stem):
            raise ValueError(
                "the file's name must be <name>.yaml, with letters, digits, '_', '.', '-'"
            )
    return value


def export_name(export: str, study: str) -> str:
    """The experiment's name (`experiment=<name>`) that `search.export` writes."""
    from pathlib import PurePath

    path = PurePath(export)
    return path.stem if path.suffix == ".yaml" else f"{study}_best"


class SearchConfig(_Section):
    """An Optuna study over the training config (`python -m pipeline.search`, conf/search/)."""

    study: StudyName = Field(description="the study's name: the same name continues it")
    n_trials: PositiveInt = Field(description="trials of the whole study, across its workers")
    workers: PositiveInt = Field(description="local worker processes, sharing the cores")
    threads: PositiveInt | None = Field(
        description="TensorFlow threads per worker (null: cores / workers)"
    )
    storage: str | None = Field(
        description="null: a journal file beside the MLflow store (mlruns/optuna/); "
        "postgresql://...: a database of its own (not MLflow's)"
    )
    sampler_seed: Int | None = Field(description="TPE's seed (repeatable with one worker)")
    pruner: Literal["median", "hyperband", "none"] = Field(
        description="stops trials whose valid accuracy lags"
    )
    startup_trials: NonNegativeInt = Field(description="median pruner: trials never pruned")
    warmup_epochs: NonNegativeInt = Field(description="no pruning before this epoch")
    heartbeat_seconds: PositiveInt = Field(description="a running trial says it is alive so often")
    grace_seconds: PositiveInt = Field(
        description="a trial silent this long is failed and retried (its worker died)"
    )
    max_retry: NonNegativeInt = Field(description="retries of a trial whose worker died")
    export: Annotated[str, AfterValidator(_export_path)] | None = Field(
        description="a folder (writes <folder>/experiment/<study>_best.yaml) or a file "
        ".../experiment/<name>.yaml: where the best trial's experiment file goes, to run "
        "with notmnist --config-dir <folder> experiment=<name>"
    )
    rerun_top: NonNegativeInt = Field(
        description="before the export, the best trials run again over more seeds (0: none)"
    )
    rerun_seeds: NonNegativeInt = Field(
        description="more train.seed values for each of those: train.seed+1, +2, ..."
    )
    report_only: Bool = Field(description="only (re)build the study's report (`search report`)")
    params: Annotated[dict[str, ParamSpec], Field(min_length=1)] = Field(
        description="the searched settings: training config keys and how each is drawn "
        "(search=<space> picks them from conf/search/)"
    )

    @model_validator(mode="after")
    def _grace_outlasts_heartbeat(self) -> SearchConfig:
        if self.grace_seconds <= self.heartbeat_seconds:
            raise ValueError("grace_seconds must be longer than heartbeat_seconds")
        return self


class StudyAppConfig(AppConfig):
    """`notmnist search`: the training config its trials start from, and the study's own."""

    search: SearchConfig = Field(description="the study (search=<space> picks its params)")


def validate_search(raw: object, base: AppConfig) -> SearchConfig:
    """Check the `search` section, and that each searched key is a setting of `base` whose
    every edge value (low, high, each choice) the training config accepts."""
    try:
        search = SearchConfig.model_validate(raw)
    except ValidationError as exc:
        problems = dict.fromkeys(_describe_search(err) for err in exc.errors())
        raise ConfigError("; ".join(problems)) from None
    if search.export is not None:
        name = export_name(search.export, search.study)
        if (config_dir() / "experiment" / f"{name}.yaml").exists():
            raise ConfigError(
                f"search.export={search.export}: experiment={name} is one of the project's own "
                f"experiments: name the file otherwise (.../experiment/<name>.yaml)"
            )
    tree = base.model_dump(mode="json")
    for key, spec in search.params.items():
        _check_setting(key, tree)
        for label, value in spec.extremes():
            try:
                validate(with_settings(tree, {key: value}))
            except ConfigError as exc:
                raise ConfigError(f"search.params.{key}.{label}: {exc}") from None
    return search


def with_settings(tree: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a config tree with dotted `settings` ({'model.l2_beta': 1e-3}) set."""
    import copy

    result = copy.deepcopy(dict(tree))
    for key, value in settings.items():
        *sections, leaf = key.split(".")
        node = result
        for section in sections:
            node = node[section]
        node[leaf] = value
    return result


def _check_setting(key: str, tree: Mapping[str, Any]) -> None:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            try:
                check_override_keys([f"{key}=0"])
            except ConfigError as exc:
                raise ConfigError(f"search.params.{key}: {exc}") from None
            raise ConfigError(f"search.params.{key}: no such setting in this config")
        node = node[part]
    if isinstance(node, Mapping):
        raise ConfigError(f"search.params.{key}: a section, not a setting ({', '.join(node)})")


def _describe_search(err: Any) -> str:
    path = ".".join(["search", *(str(p) for p in err["loc"])])
    if err["type"] == "extra_forbidden":
        return f"unknown key '{path}'"
    if err["type"] == "missing":
        return f"missing key '{path}'"
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, Mapping):
        return f"{path}: {message}"
    return f"{path}={value}: {message}"


def validate(raw: object) -> AppConfig:
    """Check a composed (and resolved) config tree; raise ConfigError with one line per problem."""
    return validated(AppConfig, raw)


def validate_retrain(raw: object) -> RetrainAppConfig:
    """`validate` for the retrain, schedule and registry commands' config."""
    return validated(RetrainAppConfig, raw)


def validated(schema: type[_M], raw: object) -> _M:
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        problems = dict.fromkeys(_describe(err, schema) for err in exc.errors())
        raise ConfigError("; ".join(problems)) from None


def validate_predict(raw: object) -> PredictConfig:
    """`validate` for the predict command's config."""
    return validated(PredictConfig, raw)


def from_args(schema: type[_M], args: Sequence[str], positional: Sequence[str] = ()) -> _M:
    """A command's settings from its command line: the words without `=` fill the
    `positional` fields in order, and `key=value` (dotted keys, values read as YAML scalars,
    as Hydra reads them: true, null, 3, 1e-3, [1, 2]) the rest; validated like any config."""
    import yaml

    tree: dict[str, Any] = {}
    words = [a for a in args if "=" not in a]
    if len(words) > len(positional):
        extra = " ".join(words[len(positional) :])
        takes = f" (it takes {', '.join(positional)})" if positional else ""
        raise ConfigError(f"unexpected {extra!r}: settings are key=value{takes}")
    tree.update(zip(positional, words, strict=False))
    for arg in (a for a in args if "=" in a):
        key, _, text = arg.partition("=")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        *sections, leaf = key.split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {section} is a setting, not a section")
        node[leaf] = value
    return validated(schema, tree)


def check_override_keys(args: Sequence[str], schema: type[BaseModel] | None = None) -> None:
    """Reject `section.key=value` overrides whose key is not in the schema, naming the keys
    that are (Hydra refuses them too, but without saying what is allowed). A top-level
    `key=value` must be a config group (`model=logreg`) or a section of the schema."""
    groups = {p.name for p in config_dir().iterdir() if p.is_dir()}
    given = dict(a.split("=", 1) for a in _overrides_only(args) if "=" in a)
    # options from another config folder (hydra.searchpath) are Hydra's to find
    elsewhere = any(k.startswith("hydra.searchpath") for k in given) or any(
        a in ("-cd", "--config-dir") for a in args
    )
    for arg in _overrides_only(args):
        key, _, value = arg.partition("=")
        if "=" not in arg or key.startswith(("-", "+", "~", "hydra.")) or "/" in key:
            continue
        root = schema or AppConfig
        if "." not in key:
            if key not in groups and key not in root.model_fields:
                raise ConfigError(_unknown_key(key, root.model_fields))
            field = root.model_fields.get(key)
            chosen = key in groups and (field is None or _fields(field.annotation) is not None)
            if chosen and not elsewhere:  # a group of this config (not predict's model=URI)
                _check_options(key, value)
            continue
        cls: Any = root
        path: list[str] = []
        for part in key.split("."):
            fields = _fields(cls, _option(path, given))
            if fields is None:
                break
            if part not in fields:
                where, option = ".".join(path), _option(path, given)
                message = _unknown_key(".".join([*path, part]), fields)
                if option and len(_union_members(cls)) > 1:  # the chosen option's keys
                    message = message.replace(f": {where} has", f": {where}={option} has", 1)
                raise ConfigError(message)
            path.append(part)
            cls = fields[part]


def _check_options(group: str, value: str) -> None:
    """`group=option` (or a sweep's `a,b`): each option a file in conf/<group>/."""
    import re

    if not re.fullmatch(r"[\w.-]+(,[\w.-]+)*", value) or value == "null":
        return  # Hydra's own syntax (choice(...), interpolations): Hydra checks it
    options = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
    for option in value.split(","):
        if option not in options:
            raise ConfigError(
                f"{group}={option}: no such option ({group} has {', '.join(options)})"
            )


def _option(path: Sequence[str], given: Mapping[str, str]) -> str | None:
    """The option chosen for the group at `path` (['data'] -> 'notmnist'): given, or the
    default of conf/config.yaml's defaults list."""
    if len(path) != 1:
        return None
    group = path[0]
    if group in given:
        return given[group].split(",")[0]
    import yaml

    defaults = yaml.safe_load((config_dir() / "config.yaml").read_text()).get("defaults", [])
    for entry in defaults:
        if isinstance(entry, Mapping) and group in entry:
            return str(entry[group])
    return None


def _source_of(group: str, option: str) -> str | None:
    """The `source` an option's YAML sets, following its own defaults (notmnist_small ->
    notmnist)."""
    import yaml

    file = config_dir() / group / f"{option}.yaml"
    if not file.is_file():
        return None
    tree = yaml.safe_load(file.read_text()) or {}
    if isinstance(tree.get("source"), str):
        return str(tree["source"])
    for entry in tree.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            return _source_of(group, entry)
    return None


# Hydra's own flags that take the next argument as their value (`-sc query=bash`)
_FLAGS_WITH_VALUE = frozenset(
    {"-sc", "--shell-completion", "-c", "--cfg", "-p", "--package", "-cp", "--config-path"}
    | {"-cn", "--config-name", "-cd", "--config-dir", "--experimental-rerun"}
)


def _overrides_only(args: Sequence[str]) -> list[str]:
    """The command line's overrides, without Hydra's flags and their values."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _FLAGS_WITH_VALUE:
            skip = True
        else:
            kept.append(arg)
    return kept


def check_predict_keys(args: Sequence[str]) -> None:
    """`check_override_keys` for the predict command, whose keys are all top-level."""
    for arg in _overrides_only(args):
        key = arg.split("=", 1)[0]
        hydra_own = key.startswith(("-", "+", "~", "hydra.", "hydra/"))
        if "=" in arg and not hydra_own and key not in PredictConfig.model_fields:
            raise ConfigError(_unknown_key(key, PredictConfig.model_fields))


def _fields(cls: Any, option: str | None = None) -> dict[str, Any] | None:
    """Field name -> annotation of a model, or of the members of a union of models: the one
    the chosen group `option` makes (its YAML's `source`), else all of them."""
    members = _union_members(cls) or (
        (cls,) if isinstance(cls, type) and issubclass(cls, BaseModel) else ()
    )
    if not members:
        return None
    source = _source_of("data", option) if option and len(members) > 1 else None
    chosen = [m for m in members if "source" in m.model_fields and _tag(m, "source") == source]
    members = tuple(chosen) or members
    return {n: f.annotation for m in members for n, f in m.model_fields.items()}


def _describe(err: Any, schema: type[BaseModel] | None = None) -> str:
    """'model.dropout_rate=1.5: Input should be less than 1'; unknown keys list the known ones."""
    if not err["loc"]:  # a check across the whole config
        return str(err["msg"]).removeprefix("Value error, ")
    path, parent = _walk(err["loc"], schema or AppConfig)
    if err["type"] == "extra_forbidden":
        return _unknown_key(path, parent.model_fields if parent else ())
    if err["type"] == "missing":
        return f"missing key '{path}'"
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if isinstance(value, Mapping):  # a check across several keys of one section
        return f"{path}: {message}"
    shown = value if isinstance(value, int | float | str | bool | None) else type(value).__name__
    return f"{path}={shown}: {message}"


def _unknown_key(key: str, allowed: Iterable[str]) -> str:
    where = key.rpartition(".")[0] or "the config"
    return f"unknown key '{key}': {where} has {', '.join(sorted(allowed))}"


def _walk(
    loc: tuple[Any, ...], schema: type[BaseModel] | None = None
) -> tuple[str, type[BaseModel] | None]:
    """Turn a pydantic error location into a dotted config key and the model holding its leaf.

    Discriminated unions insert the tag into the location ('data', 'synthetic', 'x');
    the tag is not a config key, so it is dropped from the path.
    """
    names: list[str] = []
    cls: type[BaseModel] | None = schema or AppConfig
    parent: type[BaseModel] | None = None
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if cls is None and not isinstance(part, int):
            continue  # past the leaf: pydantic's union branch names ('int', 'float')
        names.append(str(part))
        parent = cls
        field = cls.model_fields.get(str(part)) if cls else None
        if field is None:
            cls = None
            continue
        members = _union_members(field.annotation)
        if members and isinstance(field.discriminator, str) and parts:
            tag = parts.pop(0)
            cls = next((m for m in members if _tag(m, field.discriminator) == tag), None)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            cls = field.annotation
        else:
            cls = None
    return ".".join(names), parent


def _tag(model: type[BaseModel], discriminator: str) -> Any:
    """The value of a `Literal[...]` discriminator field."""
    return typing.get_args(model.model_fields[discriminator].annotation)[0]


def _union_members(annotation: Any) -> tuple[type[BaseModel], ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(
            m
            for m in typing.get_args(annotation)
            if isinstance(m, type) and issubclass(m, BaseModel)
        )
    return ()


class ServeTrackingConfig(_Section):
    """Where `serve` reads the registry and downloads models: the `tracking` settings of the
    other commands that apply to a reader (a server's account is MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD in the environment, as MLflow reads them)."""

    uri: str | None = Field(
        description="the store or server with the registry; null = the project's mlruns/"
    )
    timeout_seconds: Positive = Field(
        description="the budget of each request to a tracking server, retries included"
    )
    retries: Annotated[int, Field(strict=True, ge=0, le=10)] = Field(
        description="retried requests to a tracking server within that budget"
    )


# models:/<registered model>@<alias>: what `serve` follows
ALIAS_URI = re.compile(r"models:/(?P<name>[A-Za-z0-9_.-]+)@(?P<alias>[A-Za-z0-9_-]+)")


def _alias_uri(value: str) -> str:
    if not ALIAS_URI.fullmatch(value):
        raise ValueError("give a registered model's alias: models:/<name>@<alias>")
    return value


class ServeConfig(_Section):
    """`notmnist serve` (conf/serve/serve.yaml): an HTTP server of a registered model's alias
    that follows the alias as it moves."""

    model: Annotated[str, AfterValidator(_alias_uri)] = Field(
        description="the alias to serve and follow, models:/<name>@<alias>"
    )
    host: Annotated[str, Field(min_length=1)] = Field(
        description="the address to listen on (0.0.0.0: every interface)"
    )
    port: Annotated[int, Field(strict=True, ge=1, le=65535)] = Field(
        description="the TCP port to listen on"
    )
    poll_seconds: Annotated[float, Field(strict=True, ge=0.1, le=86400)] = Field(
        description="how often the alias is read; a new version is loaded when it moved"
    )
    max_images: PositiveInt = Field(description="images per request; more is HTTP 413")
    max_body_bytes: PositiveInt = Field(description="bytes per request body; more is HTTP 413")
    max_connections: PositiveInt = Field(
        description="connections and requests at once; more get HTTP 503 (bounds the memory "
        "held by request bodies to max_connections x max_body_bytes)"
    )
    tracking: ServeTrackingConfig = Field(description="the registry's store or server")


def validate_serve(raw: object) -> ServeConfig:
    """`validate` for the serve command's config."""
    return validated(ServeConfig, raw)


def check_serve_keys(args: Sequence[str]) -> None:
    """`check_override_keys` for the serve command, which has no config groups: `model=` is
    the alias URI, not the training config's group."""
    for arg in _overrides_only(args):
        key = arg.split("=", 1)[0].split(".", 1)[0]
        hydra_own = key.startswith(("-", "+", "~", "hydra"))
        if "=" in arg and not hydra_own and key not in ServeConfig.model_fields:
            raise ConfigError(_unknown_key(key, ServeConfig.model_fields))
    check_override_keys(args, ServeConfig)
