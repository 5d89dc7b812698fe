"""One error model: every command's bad config, bad data, unreachable store and lock held come
out of the command kernel as one line on standard error with their exit code (config 2, data 1,
tracking 2, locked out 3), whatever raised them. Run in this process through the kernel's
`run`, as `notmnist` runs them (the subprocess tests prove the console script itself)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY

from pipeline.cli.commands import COMMANDS
from pipeline.cli.main import run

DOWN = "http://127.0.0.1:9"  # nothing listens there: refused at once
FAST = ("tracking.timeout_seconds=2", "tracking.retries=0")
RUN_ID = "0123456789abcdef0123456789abcdef"
MISSING = "/nonexistent/letters.tar.gz"
HYDRA_QUIET = ("hydra/job_logging=none", "hydra/hydra_logging=none")


def _line(capsys: pytest.CaptureFixture[str], command: str, *args: str) -> tuple[int, str]:
    code = run(COMMANDS[command], list(args))
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "nothing said"
    return code, err[-1]


# (command, args, exit code, the line's start)
CASES = [
    ("train", ["train.seed=true"], 2, "config error: train.seed=True: Input should be"),
    ("train", ["model=nonexistent"], 2, "config error: model=nonexistent: no such option"),
    (
        "train",
        ["data.max_member_bytes=0"],
        2,
        "config error: unknown key 'data.max_member_bytes': data=synthetic has cache,",
    ),
    (
        "train",
        [*TINY, "data=notmnist", f"data.path={MISSING}"],
        1,
        f"data error: data.path={MISSING} does not exist",
    ),
    (
        "train",
        [*TINY, f"tracking.uri={DOWN}", *FAST],
        2,
        f"tracking error: cannot reach {DOWN} (Connection refused",
    ),
    (
        "train",
        ["model.hidden_units=[100000000]"],
        2,
        "config error: model.hidden_units=[100000000]: 79,500,000,010 parameters need at least",
    ),
    ("report", [], 2, "config error: give run_id=<sweep parent run id> or experiment=<name>"),
    (
        "report",
        ["experiment=x", f"tracking_uri={DOWN}"],
        2,
        f"tracking error: cannot reach {DOWN}",
    ),
    (
        "retrain",
        ["data=notmnist", f"data.path={MISSING}"],
        2,
        "config error: retrain.holdout.path is required",
    ),
    (
        "retrain",
        ["data=notmnist", f"data.path={MISSING}", f"retrain.holdout.path={MISSING}"],
        1,
        f"data error: data.path={MISSING} does not exist",
    ),
    (
        "retrain",
        ["data=notmnist", "data.path=x", "retrain.holdout.path=y", f"tracking.uri={DOWN}", *FAST],
        2,
        f"tracking error: cannot reach {DOWN}",
    ),
    ("schedule", ["schedule.cron=nope"], 2, "config error: "),
    ("registry", ["promote"], 2, "config error: registry promote takes the version"),
    ("registry", ["list", f"tracking.uri={DOWN}", *FAST], 2, "tracking error: cannot reach"),
    ("predict", ["input=x.png"], 2, "config error: model=<URI> is required"),
    (
        "predict",
        ["model=models:/notmnist@champion", f"input={MISSING}"],
        1,
        f"data error: input={MISSING} does not exist",
    ),
    ("reproduce", ["nope"], 2, "config error: run_id=nope: String should match pattern"),
    ("reproduce", [RUN_ID], 2, f"config error: run_id={RUN_ID}: no such run in sqlite:///"),
    ("reproduce", [RUN_ID, f"tracking_uri={DOWN}"], 2, f"tracking error: cannot reach {DOWN}"),
    ("reproduce", [RUN_ID, "model.l2_beta=1"], 2, "config error: unknown key 'model'"),
    ("search", ["search.n_trials=0"], 2, "config error: search.n_trials=0: Input should be"),
    (
        "search",
        [*TINY, "data=notmnist", f"data.path={MISSING}"],
        1,
        f"data error: data.path={MISSING} does not exist",
    ),
    ("serve", ["model=notmnist"], 2, "config error: model=notmnist: give a registered model's"),
    ("serve", ["data=notmnist"], 2, "config error: unknown key 'data': the config has host, "),
    ("serve", ["port=70000"], 2, "config error: port=70000: Input should be less than or equal"),
    ("serve", ["tracking.uri=nowhere"], 2, "tracking error: tracking.uri='nowhere' has no scheme"),
    ("maintenance", ["stale"], 2, "config error: action=stale: Input should be 'stale-runs'"),
    (
        "maintenance",
        ["stale-runs", f"tracking_uri={DOWN}"],
        2,
        f"tracking error: cannot reach {DOWN}",
    ),
]


@pytest.mark.parametrize(
    ("command", "args", "code", "start"),
    CASES,
    ids=[f"{c}-{i}" for i, (c, *_) in enumerate(CASES)],
)
def test_each_error_is_one_line_with_its_code(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command, args, code, start
) -> None:
    if COMMANDS[command].config is not None:  # Hydra's run folder: out of the checkout, and
        # logging left alone (configuring it closes the handlers pytest captures with)
        args = [*args, f"hydra.run.dir={tmp_path / 'run'}", *HYDRA_QUIET]
    found, line = _line(capsys, command, *args)
    assert (found, line[: len(start)]) == (code, start), line


def test_locked_out_is_exit_3_with_the_holder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, store_uri: str
) -> None:
    from pipeline.tracking.store.locks import store_lock

    with store_lock(store_uri, "retrain-notmnist", timeout=0):
        found, line = _line(capsys, "registry", "rollback", *HYDRA_QUIET)
    assert found == 3
    assert line.startswith("locked out: lock 'retrain-notmnist' is held by pid ")
    assert "(audit run " in line


def test_interrupted_is_exit_130(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    from pipeline.cli import report

    def stopped(args: list[str]) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "run", stopped)
    code, line = _line(capsys, "report", "experiment=x")
    assert code == 130
    assert line.startswith("interrupted: stopped by Ctrl-C or SIGTERM")


@pytest.mark.parametrize(
    ("args", "overrides"),
    [
        (["x=1", "--cfg", "job"], ["x=1"]),
        (["--cfg", "job", "x=1", "y=2"], ["x=1", "y=2"]),
        (["-sc", "install=bash"], ["install=bash"]),
        (["--info", "defaults", "x=1"], ["x=1"]),
        (["--config-name", "x=1"], []),
        (["--cfg", "job"], []),
    ],
)
def test_the_job_name_joins_the_users_overrides_where_hydra_parses_them(
    args: list[str], overrides: list[str]
) -> None:
    """Hydra's parser takes overrides as one run of positionals: the job's name goes among
    them, whichever side of Hydra's flags the user wrote them (`x=1 --cfg job` was refused)."""
    from hydra._internal.utils import get_args_parser

    from pipeline.cli._hydra import with_override

    parsed = get_args_parser().parse_args(with_override(args, ["hydra.job.name=train"]))
    assert sorted(parsed.overrides) == sorted([*overrides, "hydra.job.name=train"])
