"""Hydra's Compose API over the project's conf/: a command's config as a plain tree, for the
commands that are not Hydra applications themselves (help, registry, reproduce), so that
every default still comes from the one place it is written (the YAML)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.config.paths import config_dir
from pipeline.config.schema import AppConfig, TrackingConfig, validate
from pipeline.errors import ConfigError


def compose_tree(config: str = "config", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """conf/<config>.yaml with `overrides`, resolved, as dicts and lists; Hydra's errors as
    one-line ConfigErrors."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    folder, _, name = config.rpartition("/")
    path = config_dir() / folder if folder else config_dir()
    try:
        with initialize_config_dir(config_dir=str(path), version_base="1.3"):
            cfg = compose(config_name=name, overrides=list(overrides))
        tree = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(one_line(exc)) from None
    assert isinstance(tree, dict)
    return {str(k): v for k, v in tree.items()}


def default_config(*overrides: str) -> AppConfig:
    """The training config a run gets (conf/config.yaml composed, with `overrides`), validated:
    the defaults for code that calls the stages itself (a notebook, the benchmarks, the tests),
    read from where the pipeline reads them."""
    return validate(compose_tree("config", overrides))


def default_tracking() -> TrackingConfig:
    """The tracking settings a run gets when none are given (conf/tracking/local.yaml)."""
    return TrackingConfig.model_validate(compose_tree()["tracking"])


def one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's messages as one line: the problem, and what is allowed."""
    text = str(exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if "Available options in" in text:  # a group option that does not exist
        lines = [ln.strip() for ln in text.split("Available options in", 1)[1].splitlines()]
        group = lines[0].strip("':")
        names = []
        for line in lines[1:]:
            if not line or line.startswith("Config search path"):
                break
            names.append(line)
        return f"{first.removeprefix('In ').strip()} ({group} has {', '.join(names)})"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause).strip():
        return f"{first} ({str(cause).strip().splitlines()[0]})"
    return first
