"""`python -m pipeline [overrides]`: validate the composed config, then run it.

In a sweep (`-m`), each job runs under the sweep's parent run, and a job that fails is
recorded as a failed run while the others go on; alone, a failure ends the program.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pipeline import sweep
from pipeline.config import ConfigError, check_override_keys, validate
from pipeline.data.dataset import DataError

log = logging.getLogger("pipeline")
# JAX (KERAS_BACKEND=jax) announces at INFO that this machine has no TPU.
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, float] | None:
    overrides = list(HydraConfig.get().overrides.task)
    parent, run_name = sweep.job_context(overrides)
    try:
        settings = validate(OmegaConf.to_container(cfg, resolve=True))
        if run_name and not settings.tracking.run_name:
            settings = settings.model_copy(
                update={"tracking": settings.tracking.model_copy(update={"run_name": run_name})}
            )
    except ConfigError as exc:
        return _failed(f"config error: {exc}", 2, parent, cfg, overrides, run_name)

    _import_tensorflow_without_jax()  # only once the config is known good
    from pipeline.callbacks import DivergedError
    from pipeline.run import run

    try:
        return run(settings, overrides, parent, threads=_threads_per_job())
    except DataError as exc:  # bad input: the run is already marked FAILED; no traceback
        return _failed(f"data error: {exc}", 1, parent)
    except DivergedError as exc:  # NaN loss: likewise, one line saying what to try
        return _failed(f"training error: {exc}", 1, parent)
    except Exception:
        if parent is None:
            raise
        log.exception("This run failed (marked FAILED in MLflow); the sweep goes on")
        return None


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
        from pipeline import tracking

        tracking.record_failed_job(
            OmegaConf.to_container(cfg.tracking, resolve=True), parent, overrides, message, run_name
        )


def _import_tensorflow_without_jax() -> None:
    """Import TensorFlow with JAX hidden: where the `jax` extra is installed, TensorFlow's
    TFLite converter imports it (`from jax import jit`, guarded by `except ImportError`) for a
    feature this pipeline never uses, which costs about a second of every run's start-up.
    JAX stays importable afterwards, for Keras when KERAS_BACKEND=jax."""
    if os.environ["KERAS_BACKEND"] != "tensorflow" or {"tensorflow", "jax"} & set(sys.modules):
        return  # (TensorFlow's import imports Keras, which must see JAX when it is the backend)
    sys.modules["jax"] = None  # type: ignore[assignment]  # makes `import jax` fail fast
    try:
        import tensorflow  # noqa: F401
    finally:
        del sys.modules["jax"]


def _threads_per_job() -> int | None:
    """With parallel sweep jobs (`hydra/launcher=joblib`), each job gets its share of the
    cores, so that n jobs do not fight over them with n x cores threads."""
    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if not n_jobs:
        return None
    cores = os.cpu_count() or 1
    jobs = min(cores, n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs))
    return max(1, cores // jobs)


if __name__ == "__main__":
    try:
        check_override_keys(sys.argv[1:])
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    main()
