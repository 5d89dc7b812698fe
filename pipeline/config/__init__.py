"""Typed configuration (`schema`) and where config and files live (`paths`)."""

from pipeline.config.paths import config_dir, project_home
from pipeline.config.schema import (
    AppConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    PredictConfig,
    RetrainAppConfig,
    SearchConfig,
    TrackingConfig,
    TrainConfig,
    check_override_keys,
    check_predict_keys,
    validate,
    validate_predict,
    validate_retrain,
    validate_search,
    with_settings,
)

__all__ = [
    "AppConfig",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "PredictConfig",
    "RetrainAppConfig",
    "SearchConfig",
    "TrackingConfig",
    "TrainConfig",
    "check_override_keys",
    "check_predict_keys",
    "config_dir",
    "project_home",
    "validate",
    "validate_predict",
    "validate_retrain",
    "validate_search",
    "with_settings",
]
