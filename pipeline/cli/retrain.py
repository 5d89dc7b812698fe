"""`notmnist retrain data=notmnist data.path=<source> retrain.holdout.path=<holdout>`: one
retraining attempt, idempotent and locked, so cron may call it as often as it likes. Each
attempt is one run in the `retraining` experiment."""

from __future__ import annotations

import logging
import signal

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pipeline import process
from pipeline.cli._hydra import run_hydra
from pipeline.config import ConfigError, RetrainAppConfig, validate_retrain
from pipeline.config.schema import NotMnistDataConfig

log = logging.getLogger("pipeline")


def run(args: list[str]) -> int:
    run_hydra("retrain", _job, args, RetrainAppConfig)
    return 0


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


def _job(cfg: DictConfig) -> None:
    retrain_cfg = settings(cfg)
    overrides = list(HydraConfig.get().overrides.task)

    from pipeline.jobs.retraining import outcome_error, retrain
    from pipeline.tracking.runs.lifecycle import raise_interrupt

    # SIGTERM (a scheduler stopping the job) ends the audit run KILLED, as Ctrl-C does
    signal.signal(signal.SIGTERM, raise_interrupt)
    outcome = retrain(
        retrain_cfg,
        overrides,
        started=process.STARTED,
        # TensorFlow only when a challenger is trained: a skip (most cron calls) is quick
        before_training=process.import_tensorflow_without_jax,
    )
    if error := outcome_error(outcome):
        raise error
    print(f"retrain: {outcome.line()}", flush=True)
