"""Sweeps in MLflow: every job of a `-m` sweep hangs under one parent run, which ends with a
comparison of them all (`pipeline.reporting`).

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
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline.config import TrackingConfig
from pipeline.errors import Abort, RunsFailedError
from pipeline.names import Kind, Metric, Tag

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.runs.lifecycle import ClientRun

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"
# How long a stopped sweep waits for its jobs' processes to end their own runs
JOB_GRACE_SECONDS = 10.0


# short names for the keys sweeps vary most, so that a run's name fits the UI's name column
ALIASES = {
    "model.l2_beta": "l2",
    "model.dropout_rate": "drop",
    "model.hidden_units": "units",
    "train.learning_rate": "lr",
    "train.batch_size": "batch",
    "train.optimizer": "opt",
}


def run_name(overrides: list[str]) -> str:
    """`model.l2_beta=0.001 model.dropout_rate=0.5` -> `l2=0.001 drop=0.5`: a known key by its
    alias, any other by its last part (`data.fonts` -> `fonts`), or in full where two last
    parts would read the same. The run's full overrides are in its `overrides` tag."""
    pairs = [o.lstrip("+~").split("=", 1) for o in overrides if "=" in o]
    short = [ALIASES.get(key, key.rsplit(".", 1)[-1]) for key, _ in pairs]
    names = [s if short.count(s) == 1 else key for s, (key, _) in zip(short, pairs, strict=True)]
    return " ".join(f"{name}={value}" for name, (_, value) in zip(names, pairs, strict=True))


def job_context(overrides: list[str]) -> tuple[str | None, str | None]:
    """Inside a sweep job: (the parent run's id, a short run name made of the swept settings,
    `run_name`); (None, None) outside a sweep."""
    config = HydraConfig.get()
    path = Path(config.sweep.dir) / SWEEP_FILE
    if config.mode is None or config.mode.name != "MULTIRUN" or not path.exists():
        return None, None
    sweep = json.loads(path.read_text())
    swept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in sweep["swept"]]
    return sweep["parent_run_id"], run_name(swept) or None


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies: `a=1,2` on the command line and `hydra.sweeper.params`."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.get_key_element() for o in parsed if o.is_sweep_override()]
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return [*keys, *(k for k in params if k not in keys)]


def tracking_settings(config: DictConfig) -> TrackingConfig:
    """The composed config's `tracking` section, validated like the rest of the config."""
    return TrackingConfig.model_validate(OmegaConf.to_container(config.tracking, resolve=True))


class MlflowSweepCallback(Callback):
    """Opens the sweep's parent run, and closes it with the comparison report."""

    def __init__(self) -> None:
        self.parent: ClientRun | None = None
        self.run_id: str | None = None
        self.uri: str | None = None
        self.experiment_id: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pipeline.tracking.runs.lifecycle import open_run, raise_interrupt
        from pipeline.tracking.store.connect import TrackingError, open_store

        settings = tracking_settings(config)
        try:
            store = open_store(settings)
        except TrackingError as exc:  # before any job: one line, as a single run says it
            raise Abort(exc) from None
        overrides = [str(o) for o in config.hydra.overrides.task]
        name = settings.run_name or f"sweep {time.strftime('%Y-%m-%d %H:%M:%S')}"
        # ended by `on_multirun_end`, or KILLED at exit: a run whose life is Hydra's callbacks
        self.parent = open_run(
            store,
            name,
            {
                Tag.SWEEP: "true",
                Tag.KIND: Kind.SWEEP,
                Tag.SWEEP_OVERRIDES: " ".join(overrides),
                Tag.SWEEP_DIR: str(config.hydra.sweep.dir),
            },
        )
        self.run_id, self.uri = self.parent.run_id, store.uri
        self.experiment_id = store.experiment_id
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        context = {"parent_run_id": self.run_id, "swept": swept_keys(config)}
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(context))
        # Ctrl-C, SIGTERM or a crash of the sweep: the parent ends KILLED, not left RUNNING
        atexit.register(self._end_if_running, "KILLED")
        with contextlib.suppress(ValueError):  # only the main thread may set handlers
            signal.signal(signal.SIGTERM, raise_interrupt)
        log.info("Sweep parent run %s in experiment '%s'", self.run_id, store.experiment)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.run_id is None:
            return
        from mlflow.tracking import MlflowClient

        from pipeline.reporting.comparison import compare, find_runs
        from pipeline.reporting.publish import log_comparison
        from pipeline.tracking.recording import recorder
        from pipeline.tracking.store.connect import Store

        recorder.drain()  # jobs in this process end their runs in the background

        client = MlflowClient(self.uri)
        parent = client.get_run(self.run_id)
        runs = find_runs([parent.info.experiment_id], self.run_id)
        failed = 0
        if not runs.empty:
            comparison = compare(runs, client)
            log_comparison(client, self.run_id, comparison, str(parent.info.run_name))
            failed = len(comparison.failures)
            best = comparison.best
            if best is not None:
                log.info(
                    "Best of %d runs: %s (%s), valid accuracy %.4f, test accuracy %.4f",
                    len(comparison.table),
                    best["run_id"],
                    comparison.label(best),
                    best[Metric.BEST_VAL_ACCURACY],
                    best[Metric.TEST_ACCURACY],
                )
        self._end_if_running("FAILED" if failed or runs.empty else "FINISHED")
        log.info("Comparison logged to the sweep's parent run %s", self.run_id)
        experiment = client.get_experiment(parent.info.experiment_id)
        store = Store(str(self.uri), experiment.experiment_id, experiment.name)
        log.info("Compare the runs: %s", store.ui_hint())
        if failed or runs.empty:
            raise Abort(
                RunsFailedError(
                    f"{failed} of the sweep's {len(runs)} runs failed: see the report on its "
                    f"parent run {self.run_id}"
                )
            )

    def _end_if_running(self, status: str) -> None:
        if self.parent is None:
            return
        client = self.parent.client
        if client.get_run(self.parent.run_id).info.status == "RUNNING":
            if status == "KILLED":
                self._kill_running_jobs(client)
            self.parent.end(status)

    def _kill_running_jobs(self, client: MlflowClient, grace: float = JOB_GRACE_SECONDS) -> None:
        """A stopped sweep leaves no job RUNNING. Jobs in worker processes that got the
        signal end their own runs KILLED; a job whose process is gone (joblib kills its
        workers when the sweep stops) is marked KILLED here at once, and one whose process
        still runs after `grace` seconds too."""
        from pipeline.tracking.runs.lifecycle import end_run
        from pipeline.tracking.runs.processes import liveness

        query = f"tags.`{Tag.PARENT_RUN_ID}` = '{self.run_id}' AND attributes.status = 'RUNNING'"
        deadline = time.monotonic() + grace
        while True:
            running = client.search_runs([str(self.experiment_id)], query)
            alive = [r for r in running if liveness(r.data.tags).state == "alive"]
            if not alive or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        for run in running:
            end_run(run.info.run_id, "KILLED", "interrupted: its sweep was stopped", client=client)
            log.warning("Job run %s marked KILLED with its sweep", run.info.run_id)
