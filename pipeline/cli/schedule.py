"""`notmnist schedule [retrain's settings]`: run `notmnist retrain` with the same settings on
`schedule.cron` (or every `schedule.interval_s` seconds; `schedule.run_now=true` once at
start too), until stopped.

Each retrain runs in its own process: TensorFlow's memory goes back after every run, and a
crash ends that run, not the scheduler. Never two at once (APScheduler `max_instances=1`,
and the retrain lock besides); runs missed while the machine slept are coalesced into one
(within `schedule.misfire_grace_s`). SIGTERM or Ctrl-C stops the scheduler cleanly: a
running retrain is sent SIGTERM too (its runs end KILLED, its lock is freed) and waited for,
so that a service manager's stop takes seconds, not a whole training; the stop is said in
one line, with how the retrain it stopped ended.
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

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pipeline.cli._hydra import run_hydra
from pipeline.config import ConfigError, RetrainAppConfig
from pipeline.config.schema import ScheduleConfig

log = logging.getLogger("pipeline.schedule")


class RetrainJob:
    """`notmnist retrain <overrides>` in a child process; one at a time."""

    def __init__(self, overrides: Sequence[str]) -> None:
        self.command = [sys.executable, "-m", "pipeline", "retrain", *overrides]
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.last_code: int | None = None
        self._lock = threading.Lock()

    def __call__(self) -> int | None:
        with self._lock:
            if self.stopping.is_set():
                return None
            self.child = subprocess.Popen(self.command)
        log.info("Retrain started (pid %d)", self.child.pid)
        code = self.child.wait()
        self.last_code = code
        log.info("Retrain ended with exit code %d", code)
        return code

    def wait(self) -> int | None:
        """Until the running retrain, if any, has ended: its exit code (None: none ran)."""
        with self._lock:
            child = self.child
        return None if child is None else child.wait()

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
    """Run the job on its trigger (and once now, with `run_now`) until SIGTERM or Ctrl-C."""
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
    now = datetime.now(scheduler.timezone)
    scheduler.add_job(
        job,
        when,
        id="retrain",
        name="retrain",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=cfg.misfire_grace_s,
        **({"next_run_time": now} if cfg.run_now else {}),
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

    stopped_by: list[int] = []

    def stop(signum: int, frame: object) -> None:
        stopped_by.append(signum)
        job.stop()
        if scheduler.running:
            scheduler.shutdown(wait=False)  # the main loop ends; the job is waited for below

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    first = now if cfg.run_now else when.get_next_fire_time(None, now)
    print(
        f"schedule: notmnist {' '.join(job.command[3:])} on "
        f"{f'every {cfg.interval_s:g} s' if cfg.interval_s else repr(cfg.cron)} "
        f"({cfg.timezone}); next retrain at {first.isoformat() if first else 'never'}",
        flush=True,
    )
    scheduler.start()
    running = job.child is not None and job.child.poll() is None
    code = job.wait()
    why = f"signal {stopped_by[0]}" if stopped_by else "its scheduler ended"
    if running:
        ended = "KILLED (exit code 130)" if code == 130 else f"with exit code {code}"
        print(f"schedule: stopped ({why}) during a retrain; its runs ended {ended}", flush=True)
    else:
        print(f"schedule: stopped ({why}), between retrains", flush=True)


def run(args: list[str]) -> int:
    run_hydra("retrain", _job, args, RetrainAppConfig)
    return 0


def _job(cfg: DictConfig) -> None:
    from pipeline.cli.retrain import settings

    schedule = settings(cfg).schedule
    trigger(schedule)  # a bad cron expression is a config error before anything starts
    hydra_cfg = HydraConfig.get()
    # each retrain's own Hydra folder (config, log) goes inside the scheduler's; run_now is
    # the scheduler's, not the retrain's
    run_dir = f"hydra.run.dir={hydra_cfg.runtime.output_dir}/retrain-${{now:%Y-%m-%d_%H-%M-%S}}"
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("schedule.run_now=")]
    serve(schedule, [*overrides, run_dir])
