"""`python -m pipeline.schedule [retrain overrides]` (or `notmnist-schedule`): run
`python -m pipeline.retrain` with the same overrides on `schedule.cron` (or every
`schedule.interval_s` seconds), until stopped.

Each retrain runs in its own process: TensorFlow's memory goes back after every run, and a
crash ends that run, not the scheduler. Never two at once (APScheduler `max_instances=1`,
and the retrain lock besides); runs missed while the machine slept are coalesced into one
(within `schedule.misfire_grace_s`). SIGTERM or Ctrl-C stops the scheduler cleanly: a
running retrain is sent SIGTERM too (its runs end KILLED, its lock is freed) and waited for,
so that a service manager's stop takes seconds, not a whole training.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pipeline.cli import _process
from pipeline.cli._hydra import checked_main

_process.configure()

import hydra  # noqa: E402 - after the process settings, which must precede these imports
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pipeline.config import (  # noqa: E402
    ConfigError,
    RetrainAppConfig,
    config_dir,
)
from pipeline.config.schema import ScheduleConfig  # noqa: E402

log = logging.getLogger("pipeline.schedule")


class RetrainJob:
    """`python -m pipeline.retrain <overrides>` in a child process; one at a time."""

    def __init__(self, overrides: Sequence[str]) -> None:
        self.command = [sys.executable, "-m", "pipeline.retrain", *overrides]
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def __call__(self) -> int | None:
        with self._lock:
            if self.stopping.is_set():
                return None
            self.child = subprocess.Popen(self.command)
        log.info("Retrain started (pid %d)", self.child.pid)
        code = self.child.wait()
        log.info("Retrain ended with exit code %d", code)
        return code

    def wait(self) -> None:
        """Until the running retrain, if any, has ended."""
        with self._lock:
            child = self.child
        if child is not None:
            child.wait()

    def stop(self) -> None:
        """No new run; the running one, if any, gets SIGTERM."""
        with self._lock:
            self.stopping.set()
            if self.child is not None and self.child.poll() is None:
                self.child.send_signal(signal.SIGTERM)


def trigger(cfg: ScheduleConfig) -> Any:
    """A cron trigger, or an interval one when `interval_s` is set."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if cfg.interval_s is not None:
        return IntervalTrigger(seconds=cfg.interval_s, timezone=cfg.timezone)
    try:
        return CronTrigger.from_crontab(cfg.cron, timezone=cfg.timezone)
    except ValueError as exc:
        raise ConfigError(f"schedule.cron={cfg.cron!r}: {exc}") from None


def serve(cfg: ScheduleConfig, overrides: Sequence[str]) -> None:
    """Run the job on its trigger until SIGTERM or Ctrl-C."""
    from apscheduler.events import (
        EVENT_JOB_ERROR,
        EVENT_JOB_EXECUTED,
        EVENT_JOB_MAX_INSTANCES,
        JobEvent,
    )
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.blocking import BlockingScheduler

    job = RetrainJob(overrides)
    scheduler = BlockingScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=1)}, timezone=cfg.timezone
    )
    when = trigger(cfg)
    scheduler.add_job(
        job,
        when,
        id="retrain",
        name="retrain",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=cfg.misfire_grace_s,
    )

    def next_fire(event: JobEvent | None = None) -> None:
        if event is not None and event.code == EVENT_JOB_MAX_INSTANCES:
            log.info("Retrain still running: this fire time is skipped")
        scheduled = scheduler.get_job("retrain")
        at = scheduled.next_run_time if scheduled else None
        if not job.stopping.is_set():
            print(f"schedule: next retrain at {at.isoformat() if at else 'never'}", flush=True)

    scheduler.add_listener(
        next_fire, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES
    )

    def stop(signum: int, frame: object) -> None:
        print(f"schedule: stopping (signal {signum})", flush=True)
        job.stop()
        if scheduler.running:
            scheduler.shutdown(wait=False)  # the main loop ends; the job is waited for below

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    first = when.get_next_fire_time(None, datetime.now(scheduler.timezone))
    print(
        f"schedule: {' '.join(job.command[1:])} on "
        f"{f'every {cfg.interval_s:g} s' if cfg.interval_s else repr(cfg.cron)} "
        f"({cfg.timezone}); next retrain at {first.isoformat() if first else 'never'}",
        flush=True,
    )
    scheduler.start()
    job.wait()
    print("schedule: stopped", flush=True)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="retrain")
def _hydra_main(cfg: DictConfig) -> None:
    from pipeline.cli.retrain import settings

    try:
        schedule = settings(cfg).schedule
        trigger(schedule)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    hydra_cfg = HydraConfig.get()
    # each retrain's own Hydra folder (config, log) goes inside the scheduler's
    run_dir = f"hydra.run.dir={hydra_cfg.runtime.output_dir}/retrain-${{now:%Y-%m-%d_%H-%M-%S}}"
    serve(schedule, [*hydra_cfg.overrides.task, run_dir])


def main() -> None:
    """The console script: reject unknown keys with the allowed ones named, then run Hydra."""
    checked_main(_hydra_main, RetrainAppConfig)
