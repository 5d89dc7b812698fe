"""One source of defaults: the YAML under conf/. The schema types and describes every key the
YAML sets and defaults none of them; the stages take every setting keyword-only with no
default; the blocks that several options share are written once."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import yaml
from conftest import CONF_DIR, settings
from pydantic import BaseModel

from pipeline.cli.commands import COMMANDS
from pipeline.config.compose import compose_tree
from pipeline.config.schema import AppConfig, NotMnistDataConfig, SyntheticDataConfig

# every command whose config Hydra composes from conf/, and its schema
_COMPOSED = {name: c for name, c in COMMANDS.items() if c.config is not None}
# options that need a value from the user to be complete
_REQUIRED = {"notmnist": ["data.path=any"], "notmnist_small": [], "notmnist_large": []}


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models(arg)]


def _defaulted(schema: type[BaseModel], prefix: str = "") -> list[str]:
    """The fields of `schema` (and of the sections it holds) that have a default of their own."""
    found = []
    for name, field in schema.model_fields.items():
        if not field.is_required():
            found.append(f"{prefix}{name}")
        if name == "params":  # a search space's ParamSpec: read from conf/search/, not composed
            continue
        for model in _models(field.annotation):
            found.extend(_defaulted(model, f"{prefix}{name}."))
    return found


@pytest.mark.parametrize("name", list(_COMPOSED))
def test_a_composed_schema_defaults_nothing(name: str) -> None:
    """A default in the schema would be a second one beside the YAML's, free to drift."""
    assert _defaulted(_COMPOSED[name].schema_class()) == []


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and f"{prefix}{key}" != "search.params":
            found.update(_leaves(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


@pytest.mark.parametrize("name", list(_COMPOSED))
def test_the_composed_default_config_is_the_schemas_view_of_it(name: str) -> None:
    """Every key the YAML sets is a schema field and every field is set by the YAML (neither
    side has a key the other lacks), and validating changes no value: the defaults a run
    records are the YAML's, to the last digit."""
    command = _COMPOSED[name]
    tree = {k: v for k, v in compose_tree(command.config).items() if k != "hydra"}
    if name == "predict":  # its two required settings have no default, by design
        tree.update(model="runs:/0/model", input="x.png")
    validated = command.schema_class().model_validate(tree)
    assert _leaves(validated.model_dump(mode="json", exclude_unset=True)) == _leaves(tree)
    assert _leaves(validated.model_dump(mode="json")) == _leaves(tree) or name == "search"


@pytest.mark.parametrize(
    ("group", "option"),
    [
        (g, p.stem)
        for g in ("data", "model", "train", "tracking")
        for p in (CONF_DIR / g).glob("*.yaml")
    ],
)
def test_every_option_of_a_group_is_the_schemas_view_of_it(group: str, option: str) -> None:
    overrides = [f"{group}={option}", *_REQUIRED.get(option, [])]
    tree = compose_tree("config", overrides)
    tree.pop("hydra", None)
    assert _leaves(AppConfig.model_validate(tree).model_dump(mode="json")) == _leaves(tree)


def test_the_augment_block_is_written_once() -> None:
    """conf/model/augment/none.yaml is every model's augment block (through its defaults
    list); no model file writes its own, and the block composes the same into each."""
    block = yaml.safe_load((CONF_DIR / "model" / "augment" / "none.yaml").read_text())
    for path in sorted((CONF_DIR / "model").glob("*.yaml")):
        own = yaml.safe_load(path.read_text())
        assert "augment" not in own, path.name
        assert {"augment": "none"} in own["defaults"], path.name
        assert settings(f"model={path.stem}").model.augment.model_dump() == block
    changed = settings("model=deep", "model.augment.zoom=0.1").model
    assert (changed.name, changed.augment.zoom, changed.augment.shift) == ("deep", 0.1, 0.0)


def test_an_unknown_augment_option_names_the_ones_there_are() -> None:
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=r"model/augment/bogus' \(model/augment has none\)$"):
        compose_tree("config", ["model/augment=bogus"])


def test_the_data_formats_are_written_once() -> None:
    from pipeline import names
    from pipeline.config import schema
    from pipeline.config.schema import DataLocation, HoldoutConfig

    fields = (
        NotMnistDataConfig.model_fields["format"],
        NotMnistDataConfig.model_fields["exclude_format"],
        HoldoutConfig.model_fields["format"],
    )
    assert all(f.annotation is names.SourceFormat for f in fields)
    assert DataLocation.model_fields["format"].annotation == names.SourceFormat | None
    assert schema.SourceFormat is names.SourceFormat


def test_the_prediction_caps_are_the_data_configs() -> None:
    """`notmnist predict` takes its null caps from the data stage's constants: the same
    numbers as conf/data/notmnist.yaml's."""
    from pipeline.stages.data.sources import MAX_MEMBER_BYTES, MAX_TOTAL_BYTES

    data = settings("data=notmnist", "data.path=any").data
    assert isinstance(data, NotMnistDataConfig)
    assert (data.max_member_bytes, data.max_total_bytes) == (MAX_MEMBER_BYTES, MAX_TOTAL_BYTES)


def _stages() -> dict[Callable[..., Any], set[str]]:
    """Each stage function, and the parameters it may default (hooks, not settings)."""
    from pipeline.stages.data import load_synthetic
    from pipeline.stages.data.notmnist import load_holdout, load_notmnist, source_digest
    from pipeline.stages.data.synthetic import render_letters
    from pipeline.stages.model import build_model
    from pipeline.stages.train import compile_model, fit, make_optimizer

    return {
        build_model: set(),
        make_optimizer: set(),
        compile_model: set(),
        fit: {"callbacks", "checkpoint_dir"},
        load_synthetic: set(),
        load_notmnist: set(),
        load_holdout: set(),
        render_letters: set(),
        source_digest: set(),
    }


def test_the_stages_take_their_settings_keyword_only_without_defaults() -> None:
    for stage, hooks in _stages().items():
        for param in inspect.signature(stage).parameters.values():
            if param.name in hooks:
                continue
            assert param.default is inspect.Parameter.empty, f"{stage.__name__}({param.name}=)"


def _keyword_only(stage: Callable[..., Any]) -> set[str]:
    params = inspect.signature(stage).parameters.values()
    return {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def test_the_config_maps_onto_every_argument_and_every_key_is_used() -> None:
    """The mappings of pipeline.jobs.training give each stage exactly its arguments, and
    every key of the model and train sections reaches a stage (or the job): a new key the
    job does not pass on fails here."""
    from pipeline.jobs.training import fit_arguments, model_arguments, optimizer_arguments
    from pipeline.stages.data import load_synthetic
    from pipeline.stages.data.notmnist import load_notmnist
    from pipeline.stages.model import build_model
    from pipeline.stages.train import fit, make_optimizer

    cfg = settings()
    assert set(model_arguments(cfg, 10, (28, 28))) == _keyword_only(build_model)
    assert set(optimizer_arguments(cfg.train)) == _keyword_only(make_optimizer)
    assert set(fit_arguments(cfg.train)) == _keyword_only(fit) - {"callbacks", "checkpoint_dir"}
    assert set(SyntheticDataConfig.model_fields) - {"source"} == _keyword_only(load_synthetic)
    assert set(NotMnistDataConfig.model_fields) - {"source"} == _keyword_only(load_notmnist)

    model_keys = set(cfg.model.model_dump()) - {"augment"} | set(cfg.model.augment.model_dump())
    assert model_keys <= set(model_arguments(cfg, 10, (28, 28)))
    # where each train key goes: the optimizer, fit, or the job itself
    by_the_job = {"seed", "steps_per_execution", "resume"}  # seeds, compile_model, resuming
    to_optimizer = {"optimizer", "learning_rate", "momentum", "lr_decay"}
    to_fit = {"epochs", "batch_size", "early_stopping", "verbose"}
    assert set(cfg.train.model_dump()) == by_the_job | to_optimizer | to_fit
