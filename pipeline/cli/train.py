"""`python -m pipeline [overrides]` (or `notmnist-train`): validate the composed config, then
train, evaluate and log one run.

In a sweep (`-m`), each job runs under the sweep's parent run, and a job that fails is
recorded as a failed run while the others go on; alone, a failure ends the program.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from pipeline.cli import _process
from pipeline.cli._hydra import checked_main

_process.configure()

import hydra  # noqa: E402 - after the process settings, which must precede these imports
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from pipeline.config import ConfigError, config_dir, validate  # noqa: E402
from pipeline.stages.data.dataset import DataError  # noqa: E402
from pipeline.tracking import recorder, sweep  # noqa: E402
from pipeline.tracking.location import TrackingError  # noqa: E402

log = logging.getLogger("pipeline")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> dict[str, float] | None:
    started = _process.job_started()
    if _jobs_in_workers():  # a parallel sweep's worker: it must not outlive the sweep
        _process.die_with_parent()
    overrides = list(HydraConfig.get().overrides.task)
    parent, run_name = sweep.job_context(overrides)
    try:
        settings = validate(OmegaConf.to_container(cfg, resolve=True))
        if run_name and not settings.tracking.run_name:
            settings = settings.model_copy(
                update={"tracking": settings.tracking.model_copy(update={"run_name": run_name})}
            )
    except ConfigError as exc:
        _failed(f"config error: {exc}", 2, parent, cfg, overrides, run_name)
        return None

    # The recorder's helper opens the store (importing MLflow) while TensorFlow imports here.
    recorder.recorder().request_store(settings.tracking)
    _process.import_tensorflow_without_jax()  # only once the config is known good
    from pipeline.jobs.training import run
    from pipeline.stages.train import DivergedError

    try:
        store = recorder.recorder().store(settings.tracking)
    except TrackingError as exc:
        _failed(f"tracking error: {exc}", 2, parent)
        return None
    try:
        return run(
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
    except DataError as exc:  # bad input: the run is already marked FAILED; no traceback
        _failed(f"data error: {exc}", 1, parent)
        return None
    except DivergedError as exc:  # NaN loss: likewise, one line saying what to try
        _failed(f"training error: {exc}", 1, parent)
        return None
    except TrackingError as exc:
        _failed(f"tracking error: {exc}", 2, parent)
        return None
    except ConfigError as exc:  # train.resume names a run that cannot be continued
        _failed(f"config error: {exc}", 2, parent)
        return None
    except Exception:
        if parent is None:
            raise
        log.exception("This run failed (marked FAILED in MLflow); the sweep goes on")
        return None
    finally:
        if _process.orphaned():  # its sweep died: the run is ended KILLED, and so is this
            recorder.close()
            _process.exit_now(143)


def _failed(
    message: str,
    code: int,
    parent: str | None,
    cfg: DictConfig | None = None,
    overrides: Sequence[str] = (),
    run_name: str | None = None,
) -> None:
    """Alone: print the one-line error and exit. In a sweep: record it and let the sweep go on
    (a config error has no MLflow run yet, so it gets a FAILED one naming its overrides)."""
    print(message, file=sys.stderr)
    if parent is None:
        raise SystemExit(code)
    if cfg is not None:
        from pipeline.tracking.runs import record_failed_job

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


def main() -> None:
    """The console script: reject unknown keys with the allowed ones named, then run Hydra.

    Its exit skips TensorFlow's seconds of teardown once every run is recorded and ended
    (`_process.exit_now`)."""
    recorder.recorder()  # its helper starts importing MLflow now, beside Hydra and TensorFlow
    _process.filter_native_noise()
    code: int | str | None = 0
    try:
        checked_main(_hydra_main)
    except SystemExit as exc:
        code = exc.code
    finally:
        recorder.close()
    _process.exit_now(code)
