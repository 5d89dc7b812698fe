"""Sweeps in MLflow: every job of a `-m` sweep hangs under one parent run, which ends with a
comparison of them all (`pipeline.report`).

Registered as a Hydra callback in conf/config.yaml. The parent run is made before any job
starts and its id written into the sweep folder, where every job finds it, whether it runs
in this process (the basic launcher) or in another (`hydra/launcher=joblib`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import signal
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"


def job_context(overrides: list[str]) -> tuple[str | None, str | None]:
    """Inside a sweep job: (the parent run's id, a run name made of the swept settings);
    (None, None) outside a sweep."""
    config = HydraConfig.get()
    path = Path(config.sweep.dir) / SWEEP_FILE
    if config.mode is None or config.mode.name != "MULTIRUN" or not path.exists():
        return None, None
    sweep = json.loads(path.read_text())
    swept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in sweep["swept"]]
    return sweep["parent_run_id"], " ".join(swept) or None


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies: `a=1,2` on the command line and `hydra.sweeper.params`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return [*keys, *(k for k in params if k not in keys)]


class MlflowSweepCallback(Callback):
    """Opens the sweep's parent run, and closes it with the comparison report."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.uri: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        from pipeline import tracking

        settings = OmegaConf.to_container(config.tracking, resolve=True)
        store = tracking.connect(
            settings["uri"], settings["experiment"], settings.get("artifact_location")
        )
        overrides = list(OmegaConf.to_container(config.hydra.overrides.task))
        name = settings.get("run_name") or f"sweep {time.strftime('%Y-%m-%d %H:%M:%S')}"
        client = MlflowClient(store.uri)
        parent = client.create_run(
            store.experiment_id,
            run_name=name,
            tags={
                **tracking.git_tags(),
                "sweep": "true",
                "sweep.overrides": " ".join(overrides),
                "sweep.dir": str(config.hydra.sweep.dir),
            },
        )
        self.run_id, self.uri = parent.info.run_id, store.uri
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        context = {"parent_run_id": self.run_id, "swept": swept_keys(config)}
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(context))
        # Ctrl-C, SIGTERM or a crash of the sweep: the parent ends KILLED, not left RUNNING
        atexit.register(self._end_if_running, "KILLED")
        with contextlib.suppress(ValueError):  # only the main thread may set handlers
            signal.signal(signal.SIGTERM, tracking.raise_interrupt)
        log.info("Sweep parent run %s in experiment '%s'", self.run_id, store.experiment)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id is None:
            return
        from mlflow.tracking import MlflowClient

        from pipeline import report

        client = MlflowClient(self.uri)
        parent = client.get_run(self.run_id)
        runs = report.find_runs([parent.info.experiment_id], self.run_id)
        failed = 0
        if not runs.empty:
            comparison = report.compare(runs, client)
            report.log_to_parent(client, self.run_id, comparison, str(parent.info.run_name))
            failed = len(comparison.failures)
            best = comparison.best
            if best is not None:
                log.info(
                    "Best of %d runs: %s (%s), valid accuracy %.4f, test accuracy %.4f",
                    len(comparison.table),
                    best["run_id"],
                    comparison.label(best),
                    best["best_val_accuracy"],
                    best["test_accuracy"],
                )
        self._end_if_running("FAILED" if failed or runs.empty else "FINISHED")
        log.info("Comparison logged to the sweep's parent run %s", self.run_id)
        if failed or runs.empty:
            log.error("%d of the sweep's runs failed: see the parent run's report", failed)
            raise SystemExit(1)

    def _end_if_running(self, status: str) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        if self.run_id and client.get_run(self.run_id).info.status == "RUNNING":
            client.set_terminated(self.run_id, status)
