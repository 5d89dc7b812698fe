"""`notmnist registry list | promote VERSION | rollback [retrain's settings]`: the registered
model's versions, and moving its `champion` alias by hand (under the retrain lock, each move
an audit run in the `retraining` experiment)."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.config import ConfigError, RetrainAppConfig, check_override_keys, validate_retrain
from pipeline.config.compose import compose_tree

ACTIONS = ("list", "promote", "rollback")


def run(args: list[str]) -> int:
    words = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    action = words[0] if words else None
    if action not in ACTIONS:
        raise ConfigError(f"registry takes {' | '.join(ACTIONS)}, got {action!r}")
    version = None
    if action == "promote":
        if len(words) != 2 or not words[1].isdecimal():
            raise ConfigError("registry promote takes the version to promote: promote VERSION")
        version = words[1]
    elif len(words) > 1:
        raise ConfigError(f"registry {action} takes no {' '.join(words[1:])!r}")
    settings = load_settings(overrides)
    if action == "list":
        return _list(settings)

    from mlflow.exceptions import MlflowException

    from pipeline.errors import RegistryError
    from pipeline.jobs.retraining import manual, outcome_error

    try:
        outcome = manual(settings, action, version)
    except MlflowException as exc:  # an unknown version or model, named by MLflow
        raise RegistryError(str(exc.message).strip().splitlines()[0]) from None
    if error := outcome_error(outcome):
        raise error
    print(f"{action}: {outcome.line()}")
    return 0


def load_settings(overrides: Sequence[str]) -> RetrainAppConfig:
    """conf/retrain.yaml with the overrides, validated (the data source is not needed)."""
    check_override_keys(overrides, RetrainAppConfig)
    return validate_retrain(compose_tree("retrain", overrides))


def _list(settings: RetrainAppConfig) -> int:
    from dataclasses import asdict

    import pandas as pd
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.models.registry import table
    from pipeline.tracking.store.connect import reach

    uri = reach(settings.tracking.uri, settings.tracking.timeout_seconds, settings.tracking.retries)
    name = settings.registry.model_name
    rows = table(MlflowClient(uri, registry_uri=uri), name)
    if not rows:
        print(f"no versions of model {name!r} in {uri}")
        return 0
    print(f"model {name!r} in {uri}")
    print(pd.DataFrame([asdict(r) for r in rows]).to_string(index=False))
    return 0
