"""`python -m pipeline.retrain data=notmnist data.path=<source> retrain.holdout.path=<holdout>`
(or `notmnist-retrain`): one retraining attempt, idempotent and locked, so cron may call it
as often as it likes.

Exit codes: 0 promoted, kept or skipped; 1 failed; 2 config error; 3 locked out (another
attempt for the same registered model holds the lock). Each attempt is one run in the
`retraining` experiment.
"""

from __future__ import annotations

import logging
import signal
import sys

from pipeline.cli import _process
from pipeline.cli._hydra import checked_main

_process.configure()

import hydra  # noqa: E402 - after the process settings, which must precede these imports
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from pipeline.config import (  # noqa: E402
    ConfigError,
    RetrainAppConfig,
    config_dir,
    validate_retrain,
)
from pipeline.config.schema import NotMnistDataConfig  # noqa: E402

log = logging.getLogger("pipeline")


def settings(cfg: DictConfig) -> RetrainAppConfig:
    """The validated config, with what retraining needs beyond the schema checked too."""
    settings = validate_retrain(OmegaConf.to_container(cfg, resolve=True))
    if not isinstance(settings.data, NotMnistDataConfig) or settings.data.path is None:
        raise ConfigError(
            "retraining needs a local source: data=notmnist data.path=<.tar.gz, folder, IDX "
            "file or .pickle>"
        )
    if settings.retrain.holdout.path is None:
        raise ConfigError(
            "retrain.holdout.path is required: the frozen evaluation set (any source that "
            "data=notmnist reads)"
        )
    return settings


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="retrain")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        retrain_cfg = settings(cfg)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    overrides = list(HydraConfig.get().overrides.task)

    from pipeline.jobs.retraining import EXIT_FAILED, retrain
    from pipeline.stages.data.dataset import DataError
    from pipeline.tracking.registry import RegistryError
    from pipeline.tracking.runs import raise_interrupt

    # SIGTERM (a scheduler stopping the job) ends the audit run KILLED, as Ctrl-C does
    signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        outcome = retrain(
            retrain_cfg,
            overrides,
            started=_process.STARTED,
            # TensorFlow only when a challenger is trained: a skip (most cron calls) is quick
            before_training=_process.import_tensorflow_without_jax,
        )
    except DataError as exc:  # bad input: the audit run is already marked FAILED
        print(f"data error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None
    except RegistryError as exc:  # refused by the server: so is the audit run, if it exists
        print(f"registry error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None
    print(
        f"retrain: {outcome.decision}: {outcome.reason} "
        f"(champion {outcome.champion_before} -> {outcome.champion_after}; "
        f"audit run {outcome.audit_run_id})"
    )
    if outcome.exit_code:
        raise SystemExit(outcome.exit_code)


def main() -> None:
    """The console script: reject unknown keys with the allowed ones named, then run Hydra."""
    checked_main(_hydra_main, RetrainAppConfig)
