"""One study: Optuna's handle, its one MLflow parent run, and what it was started with.

The parent run is made once, under the study's lock, by whichever worker comes first, and
its id kept in the study's user attributes, where later workers find it. So is the record of
what the study's trials mean (`started_with`): the data's digest and every setting that is
not searched; a worker that brings other settings is refused before its first trial, so that
one study never mixes trials of different data or budgets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from pipeline.config import AppConfig, SearchConfig, TrackingConfig
from pipeline.errors import ConfigError
from pipeline.jobs.search.storage import (
    StaleCallback,
    check_storage,
    open_storage,
    storage_label,
)
from pipeline.names import Artifact, Kind, Tag
from pipeline.tracking.store.location import Store
from pipeline.tracking.store.locks import store_lock

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"  # study user attribute: the parent run's id
STARTED_WITH_ATTR = "started_with"  # study user attribute: what its trials mean
DATA_OVERRIDES_ATTR = "data_overrides"  # the first worker's data=..., data.* overrides
RUN_ID = re.compile(r"[0-9a-f]{32}")
ACTIVE = (TrialState.RUNNING, TrialState.WAITING)

# Settings that say where the data is or how it is read and cached, not what it is (the
# digest stands for the content), or how a run shows itself: no part of what a trial means.
_NOT_MEANING = frozenset(
    {f"data.{k}" for k in ("path", "url", "format", "cache", "cache_dir", "expected_size")}
    | {f"data.{k}" for k in ("sha256", "allow_pickle", "exclude_path", "exclude_format")}
    | {"train.verbose", "train.resume"}
)
_SHOWN = 6  # differences named in the refusal's one line; the rest are counted


@dataclass
class Study:
    """A study joined by this worker: Optuna's handle, where its runs go, its lock."""

    optuna: optuna.Study
    store: Store
    parent_run_id: str
    lock_uri: str
    search: SearchConfig
    tracking: TrackingConfig  # the worker's own settings, for what it reads back
    finished_before: bool = False  # done and reported when this worker joined

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """The study's lock: one worker at a time counts trials and takes one, or reports."""
        with store_lock(self.store.uri, f"study-{self.search.study}", -1, self.lock_uri):
            yield

    def active(self) -> bool:
        """Some trial runs, or waits to be retried."""
        return bool(self.optuna.get_trials(deepcopy=False, states=ACTIVE))

    def spent(self) -> bool:
        """The budget is spent: as many counted trials as `search.n_trials`."""
        return len(counted(self.optuna.get_trials(deepcopy=False))) >= self.search.n_trials

    def data_overrides(self) -> list[str]:
        """The data settings the study was started with, as its first worker gave them."""
        given = self.optuna.user_attrs.get(DATA_OVERRIDES_ATTR, [])
        if not isinstance(given, list) or not all(isinstance(o, str) for o in given):
            return []  # a study attribute: anyone may have set it
        return given

    def summary(self) -> str:
        """What the study holds and where its report is, for a worker with nothing to do."""
        trials = self.optuna.get_trials(deepcopy=False)
        states = [t.state.name.lower() for t in trials]
        counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(sorted(states)))
        return (
            f"Study '{self.search.study}' is finished: {len(trials)} trials ({counts}) for "
            f"search.n_trials={self.search.n_trials} (a larger search.n_trials goes on with "
            f"it, search.study=<another name> starts another). Its report is on its parent "
            f"run {self.parent_run_id}: {self.store.ui_hint(self.parent_run_id)}"
        )

    def end_if_idle(self, status: str) -> None:
        """Ctrl-C of the last worker with a trial: the parent stops RUNNING (a rerun resumes)."""
        from mlflow.tracking import MlflowClient

        from pipeline.tracking.runs.lifecycle import end_run

        with contextlib.suppress(Exception):
            if not self.optuna.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                end_run(self.parent_run_id, status, client=MlflowClient(self.store.uri))


def counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use the budget: all but failed ones that were queued again (their
    retry counts instead), so a dead worker's trial is neither lost nor paid twice."""
    history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history
    with warnings.catch_warnings():  # "experimental" since Optuna 3.0
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = {n for t in trials for n in history(t)}
    return [t for t in trials if t.number not in retried]


def started_with(cfg: AppConfig, search: SearchConfig, data_digest: str | None) -> dict[str, Any]:
    """What a trial of this study means besides its searched values: every data, model and
    training setting that is not searched (where the data lives and how it is read excluded),
    the data's digest (none when a data setting is searched) and the space itself."""
    dumped = cfg.model_dump(mode="json")
    flat: dict[str, Any] = {}
    for section in ("data", "model", "train"):
        flat |= _flatten(dumped[section], section)
    record: dict[str, Any] = {"data.digest": data_digest} if data_digest else {}
    record |= {k: v for k, v in flat.items() if k not in _NOT_MEANING and k not in search.params}
    record |= {
        f"search.params.{key}": spec.model_dump(mode="json", exclude_none=True)
        for key, spec in search.params.items()
    }
    return record


def _flatten(tree: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{prefix}.{key}")
        else:
            flat[f"{prefix}.{key}"] = value
    return flat


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`key old -> new` for each setting that differs (`absent` where one side has none),
    the data's digest first."""
    keys = sorted(set(old) | set(new), key=lambda k: (k != "data.digest", k))
    return [
        f"{key} {_shown(old, key)} -> {_shown(new, key)}"
        for key in keys
        if key not in old or key not in new or old[key] != new[key]
    ]


def _shown(record: Mapping[str, Any], key: str) -> str:
    if key not in record:
        return "absent"
    value = record[key]
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if key == "data.digest":
        return text[:12]
    return text if len(text) <= 40 else f"{text[:37]}..."


def _check_started_with(study: optuna.Study, name: str, record: dict[str, Any]) -> None:
    """A study continues only with what it was started with; a study from before studies
    recorded it adopts this worker's settings, with a warning."""
    old = study.user_attrs.get(STARTED_WITH_ATTR)
    if old is None:
        if study.get_trials(deepcopy=False):
            log.warning(
                "Study '%s' has no record of the settings it was started with (made before "
                "studies kept one): it takes this worker's from now on",
                name,
            )
        study.set_user_attr(STARTED_WITH_ATTR, record)
        return
    if not isinstance(old, dict) or not all(isinstance(k, str) for k in old):
        raise ConfigError(
            f"study {name}: its record of the settings it was started with "
            f"({STARTED_WITH_ATTR!r}) is not a mapping of settings: start another study "
            "(search.study=<new name>)"
        )
    diffs = differences(old, record)
    if not diffs:
        return
    shown = ", ".join(diffs[:_SHOWN])
    if len(diffs) > _SHOWN:
        shown += f" and {len(diffs) - _SHOWN} more"
    fresh = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:6]
    raise ConfigError(
        f"study '{name}' was started with other settings: {shown}. Its trials would not "
        f"compare with this worker's: start a new study for these (search.study={name}-{fresh}) "
        "or give the study's own settings to continue it"
    )


def join(
    search: SearchConfig,
    cfg: AppConfig,
    space: str = "",
    data_digest: str | None = None,
    overrides: Sequence[str] = (),
) -> Study:
    """Create or load the study and its one parent run (made by whichever worker comes first).

    A worker that works on it (not `report_only`) must bring what the study was started with
    (`started_with`, from `cfg`, `search` and the digest of the data it decoded): else a
    ConfigError of one line names what differs. A study that is finished and reported is
    left as it is (`Study.finished_before`)."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.runs.lifecycle import open_run, reopen_run
    from pipeline.tracking.store.connect import open_store

    store = open_store(cfg.tracking)
    check_storage(search.storage, store.uri)
    storage, lock_uri = open_storage(search, store.uri, _retry_and_close_run(store, search))
    with store_lock(store.uri, f"study-{search.study}", -1, lock_uri):
        if search.report_only and search.study not in optuna.get_all_study_names(storage):
            raise ConfigError(
                f"search.study={search.study}: no such study in "
                f"{storage_label(search.storage, lock_uri)}"
            )
        study = optuna.create_study(
            storage=storage,
            study_name=search.study,
            direction="maximize",
            sampler=sampler(search.sampler_seed, 0),
            pruner=pruner(search, cfg.train.epochs),
            load_if_exists=True,
        )
        record = started_with(cfg, search, data_digest)
        if not search.report_only:
            _check_started_with(study, search.study, record)
        client = MlflowClient(store.uri)
        parent = study.user_attrs.get(PARENT_ATTR)
        joined = Study(study, store, "", lock_uri, search, cfg.tracking)
        if parent is None:
            parent = open_run(
                store,
                f"study {search.study}",
                tags={
                    Tag.SWEEP: "true",  # a parent: `notmnist report experiment=` skips it
                    Tag.SEARCH: "true",
                    Tag.KIND: Kind.SEARCH,
                    Tag.SEARCH_STUDY: search.study,
                    Tag.SEARCH_STORAGE: storage_label(search.storage, lock_uri),
                    Tag.SWEEP_OVERRIDES: space,
                },
            ).run_id
            settings = yaml.safe_dump(search.model_dump(mode="json"), sort_keys=False)
            client.log_text(parent, settings, f"{Artifact.SEARCH_DIR}/search.yaml")
            client.log_dict(parent, record, f"{Artifact.SEARCH_DIR}/started_with.json")
            keys = [o.lstrip("+~").partition("=")[0] for o in overrides]
            data = [o for o, k in zip(overrides, keys, strict=True) if k.split(".")[0] == "data"]
            study.set_user_attr(DATA_OVERRIDES_ATTR, data)
            study.set_user_attr(PARENT_ATTR, parent)
            log.info("Study '%s': parent run %s", search.study, parent)
        elif not RUN_ID.fullmatch(str(parent)):  # a study attribute: anyone may have set it
            raise ConfigError(f"study {search.study}: its parent run id {parent!r} is not one")
        elif not search.report_only:
            joined.parent_run_id = str(parent)
            status = client.get_run(str(parent)).info.status
            if status in ("FINISHED", "FAILED") and joined.spent() and not joined.active():
                joined.finished_before = True
            else:  # the study goes on, in this worker: `maintenance` looks at it from now on
                reopen_run(str(parent), client)
    joined.parent_run_id = str(parent)
    return joined


def sampler(seed: int | None, trial_number: int) -> optuna.samplers.BaseSampler:
    """TPE, seeded per trial: workers that start together would otherwise draw the same
    values, while one worker stays repeatable. `constant_liar` keeps parallel workers from
    crowding where others' trials still run."""
    return optuna.samplers.TPESampler(
        seed=None if seed is None else seed * 100_003 + trial_number, constant_liar=True
    )


def pruner(search: SearchConfig, epochs: int) -> optuna.pruners.BasePruner:
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=search.startup_trials, n_warmup_steps=search.warmup_epochs
        )
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, search.warmup_epochs), max_resource=epochs
        )
    return optuna.pruners.NopPruner()


def _retry_and_close_run(store: Store, search: SearchConfig) -> StaleCallback:
    """For a trial whose worker died: queue it again (Optuna's retry), and end its MLflow run
    FAILED, which no one else would (a SIGKILLed process ends nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=search.max_retry)

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        from mlflow.tracking import MlflowClient

        from pipeline.tracking.runs.lifecycle import end_run

        retry(study, trial)
        client = MlflowClient(store.uri)
        orphans = client.search_runs(
            [store.experiment_id],
            f"tags.`{Tag.SEARCH_STUDY}` = '{study.study_name}' "
            f"and tags.`{Tag.SEARCH_TRIAL}` = '{trial.number}' and attributes.status = 'RUNNING'",
        )
        message = (
            f"its worker died: no heartbeat for {search.grace_seconds} s; the trial is retried"
        )
        for run in orphans:
            end_run(run.info.run_id, "FAILED", message, client=client)
        log.warning("Trial %d lost its worker: marked failed and queued again", trial.number)

    return callback
