"""The command table: which commands `notmnist` has. Adding one is one entry here (and its
module's `run(args) -> int`); its `--help` is made from its typed config (`pipeline.cli.help`).

Entries name their function and config by import path: a command imports only what it needs
(TensorFlow and MLflow cost seconds), and `notmnist --help` imports neither.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# the training config's groups, which every command that trains takes
TRAINING_GROUPS = ("data", "model", "model/augment", "train", "tracking", "experiment")
# exit codes every command shares (pipeline.errors)
CONFIG = (2, "config error: a setting unknown, of the wrong type or out of range")
TRACKING = (2, "tracking error: the store cannot be used")
DATA = (1, "data error: a data source is missing, unsafe or unreadable")
INTERRUPTED = (130, "interrupted: Ctrl-C or SIGTERM (open runs end KILLED)")


@dataclass(frozen=True)
class Command:
    """One `notmnist <name>` command."""

    name: str
    summary: str  # one line, for `notmnist --help`
    entry: str  # "module:function", the function taking the command's arguments
    usage: str
    schema: str  # "module:Class": the typed config, its fields' descriptions for --help
    config: str | None  # the Hydra config its defaults come from (None: the schema's own)
    examples: tuple[str, ...]
    exit_codes: tuple[tuple[int, str], ...]
    about: str = ""  # a paragraph for --help
    groups: tuple[str, ...] = ()  # the config groups it takes (data=..., model=...)

    def function(self) -> Callable[[list[str]], int | None]:
        module, _, name = self.entry.partition(":")
        function: Callable[[list[str]], int | None] = getattr(importlib.import_module(module), name)
        return function

    def schema_class(self) -> Any:
        module, _, name = self.schema.partition(":")
        return getattr(importlib.import_module(module), name)


_TABLE = (
    Command(
        name="train",
        summary="train, evaluate and log one run, or with -m a sweep of them",
        entry="pipeline.cli.train:run",
        usage="notmnist [train] [-m] [group=option ...] [key=value ...]",
        schema="pipeline.config.schema:AppConfig",
        config="config",
        groups=(*TRAINING_GROUPS, "hydra/launcher"),
        about="One run: data -> model -> train -> evaluate, every setting, metric, figure and "
        "the model recorded in MLflow. -m sweeps comma-separated values (a,b) as child runs of "
        "one parent, which ends with a comparison report; hydra/launcher=parallel runs two at "
        "a time. `--cfg job --resolve` shows the resolved config.",
        examples=(
            "notmnist model=logreg train.epochs=5",
            "notmnist data=notmnist data.path=../shared/data/notmnist-sample/"
            "notMNIST_sample.tar.gz model.l2_beta=1e-3",
            "notmnist -m model.l2_beta=0,1e-4,1e-3 model.dropout_rate=0,0.5",
        ),
        exit_codes=(
            (0, "the run (every job of a sweep) finished"),
            DATA,
            (1, "training error: the loss became NaN; failed: some of a sweep's runs failed"),
            CONFIG,
            TRACKING,
            INTERRUPTED,
        ),
    ),
    Command(
        name="report",
        summary="compare a sweep's or an experiment's runs in one report",
        entry="pipeline.cli.report:run",
        usage="notmnist report (run_id=<sweep parent> | experiment=<name>) [out=...]",
        schema="pipeline.config.schema:ReportConfig",
        config=None,
        about="A table of every run's varied settings and results, best first by valid "
        "accuracy (ties: the penalty-free valid loss; never val_loss, which includes L2), "
        "figures and the failures, as HTML or Markdown.",
        examples=(
            "notmnist report experiment=notmnist",
            "notmnist report run_id=<sweep parent run id> out=reports/sweep.md",
        ),
        exit_codes=((0, "the report was written"), CONFIG, TRACKING),
    ),
    Command(
        name="retrain",
        summary="one retraining attempt: skip, or train a challenger and promote it or not",
        entry="pipeline.cli.retrain:run",
        usage="notmnist retrain data=notmnist data.path=<source> retrain.holdout.path=<holdout> "
        "[key=value ...]",
        schema="pipeline.config.schema:RetrainAppConfig",
        config="retrain",
        groups=TRAINING_GROUPS,
        about="Idempotent and locked, so cron may call it as often as it likes: when the data, "
        "holdout and config are those of a version already trained it skips; else it trains a "
        "challenger, scores it and the champion on the same frozen holdout, and promotes it "
        "only through the gate. Every attempt is a run in the `retraining` experiment.",
        examples=(
            "notmnist retrain data=notmnist data.path=data/source "
            "retrain.holdout.path=data/holdout",
            "notmnist retrain data=notmnist data.path=data/source "
            "retrain.holdout.path=data/holdout retrain.min_delta=0.005",
        ),
        exit_codes=(
            (0, "promoted, kept or skipped"),
            DATA,
            (1, "registry error: the registry refused or failed a request"),
            CONFIG,
            TRACKING,
            (3, "locked out: another attempt for the same model holds the lock"),
            INTERRUPTED,
        ),
    ),
    Command(
        name="schedule",
        summary="run retrain on a schedule (cron or an interval) until stopped",
        entry="pipeline.cli.schedule:run",
        usage="notmnist schedule [retrain's settings] [schedule.cron=... | schedule.interval_s=N]",
        schema="pipeline.config.schema:RetrainAppConfig",
        config="retrain",
        groups=TRAINING_GROUPS,
        about="Each retrain runs in its own process, never two at once; runs missed while the "
        "machine slept are coalesced into one. SIGTERM or Ctrl-C stops it cleanly: a running "
        "retrain is stopped too (its runs end KILLED) and waited for.",
        examples=(
            "notmnist schedule data=notmnist data.path=data/source "
            "retrain.holdout.path=data/holdout schedule.run_now=true",
            "notmnist schedule data=notmnist data.path=data/source "
            "retrain.holdout.path=data/holdout schedule.cron='0 3 * * 1'",
        ),
        exit_codes=((0, "stopped by SIGTERM or Ctrl-C"), CONFIG),
    ),
    Command(
        name="registry",
        summary="the registered model's versions; move its champion by hand",
        entry="pipeline.cli.registry:run",
        usage="notmnist registry list | promote VERSION | rollback [retrain's settings]",
        schema="pipeline.config.schema:RetrainAppConfig",
        config="retrain",
        about="`list` shows every version with its aliases, holdout scores and decision; "
        "`promote` and `rollback` take the retrain lock and are audit runs like a retraining "
        "attempt.",
        examples=(
            "notmnist registry list",
            "notmnist registry promote 3 tracking.uri=http://mlflow:5000",
            "notmnist registry rollback",
        ),
        exit_codes=(
            (0, "done"),
            (1, "registry error: refused (no previous champion, unknown version) or failed"),
            CONFIG,
            TRACKING,
            (3, "locked out: a retraining attempt holds the lock"),
        ),
    ),
    Command(
        name="predict",
        summary="letters for image files with a logged model, as CSV",
        entry="pipeline.cli.predict:run",
        usage="notmnist predict model=<URI> input=<path> [output=...]",
        schema="pipeline.config.schema:PredictConfig",
        config="predict/predict",
        about="Reads a PNG, a folder of PNGs, a .tar.gz of PNGs or an IDX file; files that "
        "cannot be read are listed and skipped. The model's files are read as data: nothing "
        "it carries is run.",
        examples=(
            "notmnist predict model=models:/notmnist@champion input=letters.tar.gz",
            "notmnist predict model=runs:/<run id>/model input=scans/ output=scans.csv",
        ),
        exit_codes=(
            (0, "predictions written"),
            (1, "data error: the input is missing or holds no readable image"),
            (1, "model error: the model does not load"),
            CONFIG,
        ),
    ),
    Command(
        name="reproduce",
        summary="rerun a past run from its logged config and compare metric by metric",
        entry="pipeline.cli.reproduce:run",
        usage="notmnist reproduce <run id> [data.path=... | data.allow_pickle=true ...]",
        schema="pipeline.config.schema:ReproduceConfig",
        config=None,
        about="The run's logged config is a record, not an instruction: a pickle or a "
        "download it asks for needs the same setting here, and where the data is now may be "
        "given (its digest must still match).",
        examples=(
            "notmnist reproduce 3f2c9b0e8d7a4c1b9e6f5a4d3c2b1a09",
            "notmnist reproduce 3f2c9b0e8d7a4c1b9e6f5a4d3c2b1a09 data.path=/new/place/s.tar.gz",
        ),
        exit_codes=(
            (0, "identical, metric for metric"),
            DATA,
            CONFIG,
            TRACKING,
            (3, "not identical: some metric differs"),
        ),
    ),
    Command(
        name="search",
        summary="an Optuna hyperparameter search whose trials are pipeline runs",
        entry="pipeline.cli.search:run",
        usage="notmnist search [report] [search=<space>] [search.key=value ...] [training "
        "settings]",
        schema="pipeline.config.schema:StudyAppConfig",
        config="study",
        groups=(*TRAINING_GROUPS, "search"),
        about="search.workers=N starts N local workers; the same command on another machine "
        "with a shared search.storage adds one. `search report` only logs the study's report.",
        examples=(
            "notmnist search search.n_trials=20 data=notmnist data.path=...",
            "notmnist search report search.study=default",
        ),
        exit_codes=(
            (0, "the study's budget is spent (or its report logged)"),
            DATA,
            (1, "failed: a local worker failed"),
            CONFIG,
            TRACKING,
            INTERRUPTED,
        ),
    ),
    Command(
        name="serve",
        summary="serve a registered model's alias over HTTP and follow it as it moves",
        entry="pipeline.cli.serve:run",
        usage="notmnist serve [model=models:/<name>@<alias>] [host=...] [port=...] [key=value ...]",
        schema="pipeline.config.schema:ServeConfig",
        config="serve/serve",
        about="MLflow's scoring protocol (POST /invocations with inputs or instances), "
        "/ping, /health, /version, Prometheus /metrics and a page for people at /. Every "
        "poll_seconds it reads where the alias points; a new version is loaded in the "
        "background, checked and swapped in atomically, with no failed request.",
        examples=(
            "notmnist serve",
            "notmnist serve model=models:/notmnist@challenger port=5002 poll_seconds=5",
        ),
        exit_codes=((0, "stopped by SIGTERM or Ctrl-C"), CONFIG, TRACKING),
    ),
    Command(
        name="maintenance",
        summary="find runs left RUNNING by a process that died, and mark them KILLED",
        entry="pipeline.cli.maintenance:run",
        usage="notmnist maintenance stale-runs [kill=true] [experiment=NAME] [tracking_uri=URI]",
        schema="pipeline.config.schema:MaintenanceConfig",
        config=None,
        about="Lists every RUNNING run with its process: gone (started on this host, its "
        "process no longer exists or is another one), alive, or unknown (another host: never "
        "touched). kill=true marks the gone ones KILLED; `train.resume=<run id>` continues one.",
        examples=(
            "notmnist maintenance stale-runs",
            "notmnist maintenance stale-runs kill=true experiment=notmnist",
        ),
        exit_codes=((0, "listed (and marked)"), CONFIG, TRACKING),
    ),
)

COMMANDS: dict[str, Command] = {command.name: command for command in _TABLE}
DEFAULT = "train"
