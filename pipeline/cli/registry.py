"""`python -m pipeline.registry list | promote VERSION | rollback [overrides]` (or
`notmnist-registry`): the registered model's versions, and moving its `champion` alias by hand.

    python -m pipeline.registry list                      # versions, aliases, holdout scores
    python -m pipeline.registry promote 3                 # version 3 becomes champion
    python -m pipeline.registry rollback                  # the previous champion is back
    python -m pipeline.registry list registry.model_name=other tracking.uri=http://host:5000

Overrides are those of `python -m pipeline.retrain` (conf/retrain.yaml). `promote` and
`rollback` take the retrain lock and are recorded as runs in the `retraining` experiment.
Exit codes: 0 done, 1 refused or failed, 2 bad command or config, 3 locked out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.cli import _process

_process.configure()

from hydra import compose, initialize_config_dir  # noqa: E402 - after the process settings
from omegaconf import OmegaConf  # noqa: E402

from pipeline.config import (  # noqa: E402
    ConfigError,
    RetrainAppConfig,
    check_override_keys,
    config_dir,
    validate_retrain,
)


def load_settings(overrides: Sequence[str]) -> RetrainAppConfig:
    """conf/retrain.yaml with the overrides, validated (the data source is not needed)."""
    check_override_keys(overrides, RetrainAppConfig)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="retrain", overrides=list(overrides))
    return validate_retrain(OmegaConf.to_container(cfg, resolve=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.registry", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("command", choices=["list", "promote", "rollback"])
    parser.add_argument("args", nargs="*", help="promote: VERSION; then key=value overrides")
    ns = parser.parse_args(argv)
    version = None
    overrides = list(ns.args)
    if ns.command == "promote":
        if not overrides or "=" in overrides[0] or not overrides[0].isdigit():
            print("usage: python -m pipeline.registry promote VERSION [overrides]", file=sys.stderr)
            return 2
        version = overrides.pop(0)
    try:
        settings = load_settings(overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # Hydra's own override errors (a group that does not exist)
        print(f"config error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    if ns.command == "list":
        return _list(settings)

    from mlflow.exceptions import MlflowException

    from pipeline.jobs.retraining import manual
    from pipeline.tracking.registry import RegistryError

    try:
        outcome = manual(settings, ns.command, version)
    except MlflowException as exc:  # an unknown version or model, named by MLflow
        print(f"registry error: {exc.message}".splitlines()[0], file=sys.stderr)
        return 1
    except RegistryError as exc:  # the same from a server, with the request and account
        print(f"registry error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{ns.command}: {outcome.decision}: {outcome.reason} "
        f"(champion {outcome.champion_before} -> {outcome.champion_after}; "
        f"audit run {outcome.audit_run_id})"
    )
    return outcome.exit_code


def _list(settings: RetrainAppConfig) -> int:
    from dataclasses import asdict

    import pandas as pd
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.registry import table
    from pipeline.tracking.store import resolve_tracking_uri

    uri = resolve_tracking_uri(settings.tracking.uri)
    name = settings.registry.model_name
    rows = table(MlflowClient(uri, registry_uri=uri), name)
    if not rows:
        print(f"no versions of model {name!r} in {uri}")
        return 0
    print(f"model {name!r} in {uri}")
    print(pd.DataFrame([asdict(r) for r in rows]).to_string(index=False))
    return 0


def run() -> None:
    """The console script."""
    raise SystemExit(main())
