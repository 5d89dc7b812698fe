"""Typed configuration: the schema every Hydra-composed config must satisfy.

Hydra composes `conf/` into a plain tree; `validate` turns it into these frozen models so
that a typo, a wrong type or an out-of-range value stops the program before any work, with
one line that names the key. Stages never see this module: the entry point unpacks the
fields into their explicit arguments.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.config.paths import config_dir

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]
Positive = Annotated[float, Field(gt=0.0)]
PositiveInt = Annotated[int, Field(ge=1)]
# NumPy, scikit-learn and Keras take seeds in [0, 2**32): outside it they fail mid-run.
Seed = Annotated[int, Field(ge=0, lt=2**32)]


_M = TypeVar("_M", bound=BaseModel)


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or out of range."""


class _Section(BaseModel):
    # inf and nan pass `ge`/`gt` checks and then crash Keras or train to NaN: refused
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SyntheticDataConfig(_Section):
    """Letters rendered from matplotlib's bundled fonts (`pipeline.stages.data.synthetic`)."""

    source: Literal["synthetic"]
    train_size: PositiveInt
    valid_size: PositiveInt
    test_size: PositiveInt
    seed: Seed
    fonts: Annotated[tuple[str, ...], Field(min_length=1)]
    max_rotation_deg: Annotated[float, Field(ge=0.0, le=45.0)]
    max_shear: Annotated[float, Field(ge=0.0, le=1.0)]
    min_scale: Annotated[float, Field(gt=0.0, le=1.0)]
    max_shift: NonNegative
    noise_std: NonNegative
    cache: bool
    cache_dir: str | None


def _count_or_fraction(value: int | float) -> int | float:
    if value <= 0 or (value >= 1 and value != int(value)):
        raise ValueError("give a count (a whole number >= 1) or a fraction (0 < f < 1)")
    return int(value) if value >= 1 else value


SplitSize = Annotated[int | float, AfterValidator(_count_or_fraction)]


class NotMnistDataConfig(_Section):
    """Real notMNIST from a file, a folder or a download (`pipeline.stages.data.notmnist`)."""

    source: Literal["notmnist"]
    path: str | None
    format: Literal["auto", "tar", "folder", "idx", "pickle"]
    url: str | None
    expected_size: PositiveInt | None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None
    allow_pickle: bool
    convert: bool
    train_size: SplitSize
    valid_size: SplitSize
    test_size: SplitSize
    seed: Seed
    near_duplicate_rmsd: NonNegative | None
    cache: bool
    cache_dir: str | None
    max_member_bytes: PositiveInt
    max_total_bytes: PositiveInt
    # a frozen evaluation set (retraining's holdout): training-source images with exactly its
    # pixels are dropped before the split, and counted, so no holdout image is trained on
    exclude_path: str | None = None
    exclude_format: Literal["auto", "tar", "folder", "idx", "pickle"] = "auto"

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

    shift: Annotated[float, Field(ge=0.0, le=0.5)] = 0.0  # fraction of the image size
    rotation_deg: Annotated[float, Field(ge=0.0, le=180.0)] = 0.0
    zoom: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # +- fraction


class ModelConfig(_Section):
    """Dense + ReLU + Dropout stack; `hidden_units: []` is multinomial logistic regression."""

    name: str
    hidden_units: tuple[PositiveInt, ...]
    dropout_rate: Fraction
    l2_beta: NonNegative
    augment: AugmentConfig = AugmentConfig()


class LearningRateDecay(_Section):
    """Exponential decay `lr * rate ** (step / steps)`; rate 1.0 keeps the rate constant."""

    rate: Annotated[float, Field(gt=0.0, le=1.0)]
    steps: PositiveInt
    staircase: bool


class EarlyStoppingConfig(_Section):
    enabled: bool
    monitor: Literal["val_loss", "val_accuracy", "loss", "accuracy"]
    patience: Annotated[int, Field(ge=0)]
    min_delta: NonNegative


class TrainConfig(_Section):
    epochs: PositiveInt
    batch_size: PositiveInt
    seed: Seed
    optimizer: Literal["sgd", "momentum", "adam"]
    learning_rate: Positive
    momentum: Fraction
    lr_decay: LearningRateDecay
    early_stopping: EarlyStoppingConfig
    steps_per_execution: PositiveInt
    verbose: Literal["auto", 0, 1, 2]
    # the id of a run to continue from its last checkpointed epoch, with its own config
    resume: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")] | None = None


class TrackingConfig(_Section):
    uri: str | None
    experiment: Annotated[str, Field(min_length=1)]
    run_name: str | None
    artifact_location: str | None
    log_model: bool
    # the budget for reaching the store: a server that does not answer fails in one line
    # within `timeout_seconds` (in total), after at most `retries` retried requests
    timeout_seconds: Positive = 15.0
    retries: Annotated[int, Field(ge=0, le=10)] = 2


class AppConfig(_Section):
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    tracking: TrackingConfig


class HoldoutConfig(_Section):
    """The frozen evaluation set every challenger and champion is scored on."""

    path: str | None  # required by `retrain` (checked there), not by `registry`
    format: Literal["auto", "tar", "folder", "idx", "pickle"]
    allow_pickle: bool


class RetrainConfig(_Section):
    """`python -m pipeline.retrain`: when to train, and the gate a challenger must pass."""

    holdout: HoldoutConfig
    force: bool  # train even when the champion was trained on the same data and config
    min_delta: Annotated[float, Field(ge=-1.0, le=1.0)]  # challenger >= champion + min_delta
    max_letter_drop: Annotated[float, Field(ge=0.0, le=1.0)]  # per-letter accuracy fall allowed
    experiment: Annotated[str, Field(min_length=1)]  # where the audit runs go
    lock: str | None  # postgresql://... for a lock across machines; null = beside the store


class RegistryConfig(_Section):
    model_name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]


class ScheduleConfig(_Section):
    """`python -m pipeline.schedule`: a cron expression (5 fields), or every `interval_s`."""

    cron: str
    interval_s: Annotated[float, Field(gt=0.0)] | None
    misfire_grace_s: PositiveInt
    timezone: str

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

    retrain: RetrainConfig
    registry: RegistryConfig
    schedule: ScheduleConfig

    def training(self) -> AppConfig:
        """The config of the training run: the four training sections, as `python -m
        pipeline` would get them."""
        return AppConfig(data=self.data, model=self.model, train=self.train, tracking=self.tracking)


class PredictConfig(_Section):
    """`python -m pipeline.predict` (conf/predict/predict.yaml)."""

    model: Annotated[str, Field(min_length=1)]
    input: Annotated[str, Field(min_length=1)]
    output: Annotated[str, Field(min_length=1)]
    convert: bool
    batch_size: PositiveInt
    tracking_uri: str | None

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


class ParamSpec(_Section):
    """How a search draws one setting: `float`/`int` uniform, `log_float`/`log_int` uniform
    in log space (`low` > 0), or one of `choices` (any YAML values, lists included)."""

    kind: Literal["float", "log_float", "int", "log_int", "categorical"]
    low: float | None = None
    high: float | None = None
    step: Positive | None = None
    choices: Annotated[tuple[Any, ...], Field(min_length=1)] | None = None

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


class SearchConfig(_Section):
    """An Optuna study over the training config (`python -m pipeline.search`, conf/search/)."""

    study: StudyName
    n_trials: PositiveInt
    workers: PositiveInt
    threads: PositiveInt | None
    storage: str | None
    sampler_seed: int | None
    pruner: Literal["median", "hyperband", "none"]
    startup_trials: Annotated[int, Field(ge=0)]
    warmup_epochs: Annotated[int, Field(ge=0)]
    heartbeat_seconds: PositiveInt
    grace_seconds: PositiveInt
    max_retry: Annotated[int, Field(ge=0)]
    export: StudyName | None
    report_only: bool
    params: Annotated[dict[str, ParamSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _grace_outlasts_heartbeat(self) -> SearchConfig:
        if self.grace_seconds <= self.heartbeat_seconds:
            raise ValueError("grace_seconds must be longer than heartbeat_seconds")
        return self


def validate_search(raw: object, base: AppConfig) -> SearchConfig:
    """Check the `search` section, and that each searched key is a setting of `base` whose
    every edge value (low, high, each choice) the training config accepts."""
    try:
        search = SearchConfig.model_validate(raw)
    except ValidationError as exc:
        problems = dict.fromkeys(_describe_search(err) for err in exc.errors())
        raise ConfigError("; ".join(problems)) from None
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
    return _validated(AppConfig, raw)


def validate_retrain(raw: object) -> RetrainAppConfig:
    """`validate` for the retrain, schedule and registry commands' config."""
    return _validated(RetrainAppConfig, raw)


def _validated(schema: type[_M], raw: object) -> _M:
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        problems = dict.fromkeys(_describe(err, schema) for err in exc.errors())
        raise ConfigError("; ".join(problems)) from None


def validate_predict(raw: object) -> PredictConfig:
    """`validate` for the predict command's config."""
    try:
        return PredictConfig.model_validate(raw)
    except ValidationError as exc:
        problems = dict.fromkeys(_describe(err, PredictConfig) for err in exc.errors())
        raise ConfigError("; ".join(problems)) from None


def check_override_keys(args: Sequence[str], schema: type[BaseModel] | None = None) -> None:
    """Reject `section.key=value` overrides whose key is not in the schema, naming the keys
    that are (Hydra refuses them too, but without saying what is allowed). A top-level
    `key=value` must be a config group (`model=logreg`) or a section of the schema."""
    groups = {p.name for p in config_dir().iterdir() if p.is_dir()}
    for arg in _overrides_only(args):
        key = arg.split("=", 1)[0]
        if "=" not in arg or key.startswith(("-", "+", "~", "hydra.")) or "/" in key:
            continue
        root = schema or AppConfig
        if "." not in key:
            if key not in groups and key not in root.model_fields:
                raise ConfigError(_unknown_key(key, root.model_fields))
            continue
        cls: Any = root
        path: list[str] = []
        for part in key.split("."):
            fields = _fields(cls)
            if fields is None:
                break
            if part not in fields:
                raise ConfigError(_unknown_key(".".join([*path, part]), fields))
            path.append(part)
            cls = fields[part]


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


def _fields(cls: Any) -> dict[str, Any] | None:
    """Field name -> annotation of a model, or of all members of a union of models."""
    members = _union_members(cls) or (
        (cls,) if isinstance(cls, type) and issubclass(cls, BaseModel) else ()
    )
    if not members:
        return None
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
        15.0, description="the budget of each request to a tracking server, retries included"
    )
    retries: Annotated[int, Field(ge=0, le=10)] = Field(
        2, description="retried requests to a tracking server within that budget"
    )


# models:/<registered model>@<alias>: what `serve` follows
ALIAS_URI = re.compile(r"models:/(?P<name>[A-Za-z0-9_.-]+)@(?P<alias>[A-Za-z0-9_-]+)")


def _alias_uri(value: str) -> str:
    if not ALIAS_URI.fullmatch(value):
        raise ValueError("give a registered model's alias: models:/<name>@<alias>")
    return value


class ServeConfig(_Section):
    """`python -m pipeline.serve` (conf/serve/serve.yaml): an HTTP server of a registered
    model's alias that follows the alias as it moves."""

    model: Annotated[str, AfterValidator(_alias_uri)] = Field(
        description="the alias to serve and follow, models:/<name>@<alias>"
    )
    host: Annotated[str, Field(min_length=1)] = Field(
        description="the address to listen on (0.0.0.0: every interface)"
    )
    port: Annotated[int, Field(ge=1, le=65535)] = Field(description="the TCP port to listen on")
    poll_seconds: Annotated[float, Field(ge=0.1, le=86400)] = Field(
        description="how often the alias is read; a new version is loaded when it moved"
    )
    max_images: PositiveInt = Field(description="images per request; more is HTTP 413")
    max_body_bytes: PositiveInt = Field(description="bytes per request body; more is HTTP 413")
    max_connections: PositiveInt = Field(
        description="connections and requests at once; more get HTTP 503 (bounds the memory "
        "held by request bodies to max_connections x max_body_bytes)"
    )
    tracking: ServeTrackingConfig


def validate_serve(raw: object) -> ServeConfig:
    """`validate` for the serve command's config."""
    return _validated(ServeConfig, raw)


def check_serve_keys(args: Sequence[str]) -> None:
    """`check_override_keys` for the serve command, which has no config groups: `model=` is
    the alias URI, not the training config's group."""
    for arg in _overrides_only(args):
        key = arg.split("=", 1)[0].split(".", 1)[0]
        hydra_own = key.startswith(("-", "+", "~", "hydra"))
        if "=" in arg and not hydra_own and key not in ServeConfig.model_fields:
            raise ConfigError(_unknown_key(key, ServeConfig.model_fields))
    check_override_keys(args, ServeConfig)
