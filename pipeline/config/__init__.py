"""Typed configuration (`schema`) and where config and files live (`paths`)."""

from pipeline.config.paths import config_dir, project_home
from pipeline.config.schema import (
    AppConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    SearchConfig,
    TrackingConfig,
    TrainConfig,
    check_override_keys,
    validate,
    validate_search,
    with_settings,
)

__all__ = [
    "AppConfig",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "SearchConfig",
    "TrackingConfig",
    "TrainConfig",
    "check_override_keys",
    "config_dir",
    "project_home",
    "validate",
    "validate_search",
    "with_settings",
]
