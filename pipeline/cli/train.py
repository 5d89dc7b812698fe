"""`notmnist [train] [overrides]`: validate the composed config, then train, evaluate and log
one run.

In a sweep (`-m`), each job runs under the sweep's parent run, and a job that fails is
recorded as a failed run (its one line logged) while the others go on; alone, a failure is
raised to the command kernel, which says it in one line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pipeline import process
from pipeline.cli._hydra import run_hydra
from pipeline.config import AppConfig, ConfigError, validate
from pipeline.errors import PipelineError
from pipeline.jobs import sweep
from pipeline.tracking.recording import recorder

log = logging.getLogger("pipeline")


def run(args: list[str]) -> int:
    """The `train` command: one run, or a sweep with -m."""
    recorder.recorder()  # its helper starts importing MLflow now, beside Hydra and TensorFlow
    run_hydra("config", _job, args, AppConfig)
    return 0


def _job(cfg: DictConfig) -> dict[str, float] | None:
    started = process.job_started()
    if _jobs_in_workers():  # a parallel sweep's worker: it must not outlive the sweep
        process.die_with_parent()
    overrides = list(HydraConfig.get().overrides.task)
    parent, run_name = sweep.job_context(overrides)
    try:
        return _train(cfg, overrides, parent, run_name, started)
    except PipelineError as exc:
        if parent is None:
            raise
        log.error("%s: %s (this run is marked FAILED; the sweep goes on)", exc.kind, exc)
        if isinstance(exc, ConfigError):  # no run was opened: record one, for the report
            _record_invalid_job(cfg, parent, overrides, f"{exc.kind}: {exc}", run_name)
        return None
    except Exception:
        if parent is None:
            raise
        log.exception("This run failed (marked FAILED in MLflow); the sweep goes on")
        return None
    finally:
        if process.orphaned():  # its sweep died: the run is ended KILLED, and so is this
            recorder.close()
            process.exit_now(143)


def _train(
    cfg: DictConfig,
    overrides: list[str],
    parent: str | None,
    run_name: str | None,
    started: float,
) -> dict[str, float]:
    settings = validate(OmegaConf.to_container(cfg, resolve=True))
    if run_name and not settings.tracking.run_name:
        tracking = settings.tracking.model_copy(update={"run_name": run_name})
        settings = settings.model_copy(update={"tracking": tracking})
    # The recorder's helper opens the store (importing MLflow) while TensorFlow imports here.
    recorder.recorder().request_store(settings.tracking)
    process.import_tensorflow_without_jax()  # only once the config is known good
    from pipeline.jobs.training import run as train

    store = recorder.recorder().store(settings.tracking)
    return train(
        settings,
        overrides,
        parent,
        threads=_threads_per_job(),
        started=started,
        store=store,
        # a sweep's jobs in this process: each one's figures and model are logged while
        # the next trains (the sweep's report waits for them all)
        wait=parent is None or _jobs_in_workers(),
    )


def _record_invalid_job(
    cfg: DictConfig, parent: str, overrides: Sequence[str], message: str, run_name: str | None
) -> None:
    """A sweep job whose config is invalid has no MLflow run yet: it gets a FAILED one naming
    its overrides, so that the sweep's report lists it."""
    from pipeline.tracking.runs.lifecycle import record_failed_job

    try:
        tracking = sweep.tracking_settings(cfg)
    except ValueError:  # the tracking section itself is invalid: nowhere to record it
        return
    record_failed_job(tracking, parent, overrides, message, run_name)


def _jobs_in_workers() -> bool:
    """Whether a sweep's jobs run in launcher worker processes (joblib), each with its own
    recorder, rather than one after another in this one (the basic launcher)."""
    return bool(HydraConfig.get().launcher.get("n_jobs"))


def _threads_per_job() -> int | None:
    """With parallel sweep jobs (`hydra/launcher=joblib`), each job gets its share of the
    cores, so that n jobs do not fight over them with n x cores threads."""
    n_jobs: int | None = HydraConfig.get().launcher.get("n_jobs")
    if not n_jobs:
        return None
    cores = os.cpu_count() or 1
    jobs = min(cores, n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs))
    return max(1, cores // jobs)
