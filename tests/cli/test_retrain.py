"""The retrain and schedule commands as a user (or cron, or systemd) runs them: one-line config
errors, the lock between two attempts, a holder killed with SIGKILL, and the scheduler."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, assert_quiet, cli
from mlflow.tracking import MlflowClient
from retrain_helpers import SMALL, Sources

from pipeline.names import Tag


def test_retrain_without_a_holdout_is_a_config_error(tmp_path: Path) -> None:
    result = cli(
        "retrain",
        "data=notmnist",
        "data.path=/x.tar.gz",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "config error: retrain.holdout.path is required: the frozen evaluation set "
        "(any source that data=notmnist reads)"
    ]


def test_retrain_rejects_out_of_range_and_unknown_keys(tmp_path: Path) -> None:
    bad = cli("retrain", "retrain.min_delta=5", f"hydra.run.dir={tmp_path}")
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        == "config error: retrain.min_delta=5: Input should be less than or equal to 1"
    )
    typo = cli("retrain", "retrain.min_delt=0.1")
    assert typo.returncode == 2
    assert typo.stderr.startswith("config error: unknown key 'retrain.min_delt': retrain has ")


def test_schedule_rejects_a_bad_cron_expression(tmp_path: Path) -> None:
    result = cli(
        "schedule",
        "data=notmnist",
        "data.path=/x.tar.gz",
        "retrain.holdout.path=/y.tar.gz",
        "schedule.cron='61 * * * *'",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 2
    assert result.stderr.startswith("config error: schedule.cron='61 * * * *': ")


@pytest.fixture
def sources(tmp_path: Path) -> Sources:
    return Sources(tmp_path / "sources")


def _args(src: Sources, tmp_path: Path, *more: str) -> list[str]:
    return [
        *SMALL,
        f"data.path={src.v1}",
        f"retrain.holdout.path={src.holdout}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *more,
    ]


def _popen(command: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", command, *args],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(
    condition, proc: subprocess.Popen[str], every: float = 0.5, timeout: float = 240
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def _training_epochs(client: MlflowClient) -> bool:
    found = client.get_experiment_by_name("notmnist")
    return bool(found and client.search_runs([found.experiment_id], "metrics.loss >= 0"))


@pytest.mark.slow
def test_second_retrain_is_locked_out_and_a_killed_holder_frees_the_lock(
    sources: Sources, tmp_path: Path, store_uri: str
) -> None:
    from pipeline.tracking.store.locks import store_lock

    client = MlflowClient(store_uri, registry_uri=store_uri)
    endless = ("train.epochs=100000", "train.early_stopping.enabled=false")
    first = _popen("retrain", *_args(sources, tmp_path, *endless))
    try:
        _wait_for(lambda: _training_epochs(client), first)
        second = cli("retrain", *_args(sources, tmp_path, "retrain.force=true"))
        assert second.returncode == 3, second.stderr[-3000:]
        [line] = second.stderr.strip().splitlines()
        assert line.startswith("locked out: lock 'retrain-notmnist' is held by pid ")
        assert f"is held by pid {first.pid} on " in line
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
        first.communicate()

    # the lock died with its holder; no version was registered, so no alias points anywhere
    with store_lock(store_uri, "retrain-notmnist", timeout=0):
        pass
    assert client.search_model_versions("name = 'notmnist'") == []

    # killed again, this time as soon as its version exists: any alias points at a version
    # whose registration is complete (tags and description), and the lock is free again
    third = _popen("retrain", *_args(sources, tmp_path, "train.epochs=1"))
    try:
        _wait_for(lambda: client.search_model_versions("name = 'notmnist'") != [], third, 0.05)
        third.send_signal(signal.SIGKILL)
        third.wait(timeout=30)
    finally:
        third.kill()
        third.communicate()
    with store_lock(store_uri, "retrain-notmnist", timeout=0):
        pass
    assert len(client.search_model_versions("name = 'notmnist'")) == 1
    for alias, number in client.get_registered_model("notmnist").aliases.items():
        tags = client.get_model_version("notmnist", str(number)).tags
        assert Tag.TRAINING_RUN_ID in tags, alias  # and the run it names, its fingerprint
        assert Tag.FINGERPRINT in client.get_run(tags[Tag.TRAINING_RUN_ID]).data.tags, alias
    experiment = client.get_experiment_by_name("retraining")
    runs = client.search_runs([experiment.experiment_id], order_by=["attribute.start_time ASC"])
    [locked] = [r for r in runs if r.data.tags.get(Tag.DECISION) == "locked_out"]
    assert locked.info.status == "FINISHED"
    assert str(first.pid) in locked.data.tags[Tag.LOCK_HOLDER]


@pytest.mark.slow
def test_scheduler_runs_the_job_one_at_a_time_and_stops_on_sigterm(
    sources: Sources, tmp_path: Path, store_uri: str
) -> None:
    """Every second a fire time comes while a retrain (tens of seconds) runs: none may start
    beside it. The first run makes a champion, the next ones skip (data unchanged)."""
    client = MlflowClient(store_uri)

    def audits(status: str = "FINISHED") -> list:
        found = client.get_experiment_by_name("retraining")
        if found is None:
            return []
        runs = client.search_runs([found.experiment_id], order_by=["attribute.start_time ASC"])
        return [r for r in runs if r.info.status == status]

    scheduler = _popen("schedule", *_args(sources, tmp_path, "schedule.interval_s=1"))
    try:
        _wait_for(lambda: len(audits()) >= 2, scheduler)
        scheduler.send_signal(signal.SIGTERM)
        out, err = scheduler.communicate(timeout=120)
    finally:
        scheduler.kill()
    assert scheduler.returncode == 0, err[-3000:]
    assert "next retrain at" in out
    assert "schedule: stopped (signal 15)" in out
    assert_quiet(subprocess.CompletedProcess([], 0, out, err))  # its retrains' output too
    runs = audits("FINISHED") + audits("KILLED")
    runs.sort(key=lambda r: r.info.start_time)
    assert audits("RUNNING") == []
    assert [r.data.tags[Tag.DECISION] for r in runs[:2]] == ["promoted", "skipped"]
    for earlier, later in itertools.pairwise(runs):
        assert later.info.start_time >= earlier.info.end_time  # never two at once
    assert "locked_out" not in {r.data.tags.get(Tag.DECISION) for r in runs}
    assert list((tmp_path / "run").iterdir()), "each retrain's Hydra folder is the scheduler's"


def test_compose_scheduler_service_runs_the_schedule_command_with_a_valid_config() -> None:
    import yaml
    from hydra import compose, initialize_config_dir

    from pipeline.cli.retrain import settings
    from pipeline.config import RetrainAppConfig, check_override_keys, config_dir

    service = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"][
        "scheduler"
    ]
    assert service["entrypoint"] == ["python", "-m", "pipeline", "schedule"]
    check_override_keys(service["command"], RetrainAppConfig)
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = settings(compose(config_name="retrain", overrides=service["command"]))
    assert cfg.schedule.cron == "0 3 * * *"
    assert cfg.retrain.holdout.path == "/data/holdout"


def test_registry_command_on_an_empty_store_and_its_usage_errors(store_uri: str) -> None:
    empty = cli("registry", "list")
    assert empty.returncode == 0, empty.stderr[-3000:]
    assert empty.stdout.strip() == f"no versions of model 'notmnist' in {store_uri}"
    no_version = cli("registry", "promote")
    assert no_version.returncode == 2
    assert no_version.stderr.strip() == (
        "config error: registry promote takes the version to promote: promote VERSION"
    )
    typo = cli("registry", "list", "registry.name=x")
    assert typo.returncode == 2
    assert (
        typo.stderr.strip() == "config error: unknown key 'registry.name': registry has model_name"
    )
