"""Retraining with a registry: skip when nothing changed, else train a challenger, score it and
the champion on the same frozen holdout, and promote it only through the gate.

Every attempt is one audit run in the `retraining` experiment (`pipeline.tracking.runs.audit`),
under a lock per registered model (`pipeline.tracking.store.locks.store_lock`), so two attempts
never overlap and cron may call this as often as it likes. The gate itself (`decide`) and
the identity of a training set-up (`config_digest`, `fingerprint`) are pure functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.config import AppConfig, RetrainAppConfig
from pipeline.config.schema import NotMnistDataConfig
from pipeline.errors import LockedOutError, PipelineError, RegistryError
from pipeline.names import Artifact, Metric, Tag
from pipeline.tracking.models import registry as reg
from pipeline.tracking.models.classifier import load_keras
from pipeline.tracking.recording import recorder
from pipeline.tracking.runs.audit import Audit, audit_run
from pipeline.tracking.store.connect import Store, open_store
from pipeline.tracking.store.locks import LockHeldError, store_lock

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from pipeline.stages.data import Split

log = logging.getLogger(__name__)


# Data settings that say where the data (or the holdout) is, or how it is read and cached,
# not what it is: the source and holdout digests stand for the content, so moving a file
# does not count as a change.
_DATA_NOT_RESULT = frozenset(
    {"path", "url", "format", "cache", "cache_dir", "expected_size", "sha256", "allow_pickle"}
    | {"exclude_path", "exclude_format"}
)
_TRAIN_NOT_RESULT = frozenset({"verbose"})


@dataclass(frozen=True)
class Scores:
    """One model on the holdout: accuracy, macro-F1, loss and accuracy per letter."""

    accuracy: float
    macro_f1: float
    loss: float
    per_class: Mapping[str, float]

    def metrics(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}{Metric.HOLDOUT_ACCURACY}": self.accuracy,
            f"{prefix}{Metric.HOLDOUT_MACRO_F1}": self.macro_f1,
            f"{prefix}{Metric.HOLDOUT_LOSS}": self.loss,
            **{f"{prefix}{Metric.HOLDOUT_CLASS_PREFIX}{k}": v for k, v in self.per_class.items()},
        }


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    challenger: Scores, champion: Scores | None, min_delta: float, max_letter_drop: float
) -> Decision:
    """Promote when the challenger's holdout accuracy is at least the champion's plus
    `min_delta` and no letter's accuracy falls by more than `max_letter_drop`; with no
    champion, the challenger becomes the first."""
    if champion is None:
        return Decision(True, "no champion yet: the first valid model becomes champion")
    needed = champion.accuracy + min_delta
    if challenger.accuracy < needed:
        return Decision(
            False,
            f"holdout accuracy {challenger.accuracy:.4f} < champion's {champion.accuracy:.4f}"
            f" + min_delta {min_delta:g}",
        )
    drops = {
        letter: champion.per_class[letter] - challenger.per_class.get(letter, 0.0)
        for letter in champion.per_class
    }
    letter, drop = max(drops.items(), key=lambda item: item[1], default=("", 0.0))
    if drop > max_letter_drop:
        return Decision(
            False,
            f"letter {letter}: holdout accuracy falls by {drop:.4f} "
            f"({champion.per_class[letter]:.4f} -> {challenger.per_class[letter]:.4f}) "
            f"> max_letter_drop {max_letter_drop:g}",
        )
    return Decision(
        True,
        f"holdout accuracy {challenger.accuracy:.4f} >= champion's {champion.accuracy:.4f}"
        f" + min_delta {min_delta:g}; no letter falls by more than {max_letter_drop:g}",
    )


def config_digest(cfg: AppConfig) -> str:
    """SHA-256 of what decides the trained model besides the data's content: the data
    section's split and cleaning settings, the model and the training settings. Where the
    data lives, caching, Keras' verbosity and tracking are left out."""
    dumped = cfg.model_dump(mode="json")
    data = {k: v for k, v in dumped["data"].items() if k not in _DATA_NOT_RESULT}
    train = {k: v for k, v in dumped["train"].items() if k not in _TRAIN_NOT_RESULT}
    identity = {"data": data, "model": dumped["model"], "train": train}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def fingerprint(data_digest: str, config: str, holdout_digest: str) -> str:
    """One identity for a training set-up: the same three digests, the same challenger."""
    return hashlib.sha256(f"{data_digest}:{config}:{holdout_digest}".encode()).hexdigest()


@dataclass
class Outcome:
    """What an attempt did (`outcome_error` says which outcomes are the command's errors)."""

    decision: str
    reason: str
    audit_run_id: str = ""
    version: str | None = None
    champion_before: str | None = None
    champion_after: str | None = None
    training_run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The outcome as the command prints it."""
        return (
            f"{self.decision}: {self.reason} (champion {self.champion_before} -> "
            f"{self.champion_after}; audit run {self.audit_run_id})"
        )

    def audit_tags(self) -> dict[str, str | None]:
        """What the audit run records of it (None: not known, not recorded)."""
        return {
            Tag.DECISION: self.decision,
            Tag.REASON: self.reason,
            Tag.CHAMPION_BEFORE: self.champion_before,
            Tag.CHAMPION_AFTER: self.champion_after,
            Tag.CHALLENGER_VERSION: self.version,
            Tag.TRAINING_RUN_ID: self.training_run_id,
        }


def outcome_error(outcome: Outcome) -> PipelineError | None:
    """The error an outcome is for the command (locked out, refused), or None (promoted,
    kept, skipped, moved by hand): recorded either way in its audit run."""
    said = f"{outcome.reason} (audit run {outcome.audit_run_id})"
    if outcome.decision == "locked_out":
        return LockedOutError(said)
    if outcome.decision == "refused":
        return RegistryError(said)
    return None


def retrain(
    cfg: RetrainAppConfig,
    overrides: Sequence[str] = (),
    started: float | None = None,
    before_training: Callable[[], None] | None = None,
) -> Outcome:
    """One retraining attempt, recorded as one audit run; locked out when another attempt
    for the same registered model holds the lock. `before_training` runs only when a
    challenger is trained (the entry point imports TensorFlow there: a skip never does)."""
    return _audited(
        cfg,
        "retrain",
        lambda store, audit: _attempt(cfg, overrides, started, store, audit, before_training),
    )


def _audited(
    cfg: RetrainAppConfig, action: str, attempt: Callable[[Store, Audit], Outcome]
) -> Outcome:
    """`attempt` as one audit run, under the lock per registered model. A request the server
    refuses or fails is a RegistryError: inside the audit run (which ends FAILED with it) and
    before it, when making the run is what the server refused."""
    name = cfg.registry.model_name
    tags = {Tag.RETRAIN_ACTION: action, Tag.MODEL_NAME: name}
    with reg.server_errors():
        store = open_store(cfg.tracking, cfg.retrain.experiment)
        with audit_run(store, action, tags) as au, reg.server_errors():
            try:
                with store_lock(store.uri, f"retrain-{name}", 0, cfg.retrain.lock):
                    outcome = attempt(store, au)
            except LockHeldError as exc:
                outcome = Outcome("locked_out", str(exc))
                au.tags({Tag.LOCK_HOLDER: json.dumps(exc.holder)})
            outcome.audit_run_id = au.run_id
            au.tags(outcome.audit_tags())
    return outcome


def _attempt(
    cfg: RetrainAppConfig,
    overrides: Sequence[str],
    started: float | None,
    store: Store,
    audit: Audit,
    before_training: Callable[[], None] | None,
) -> Outcome:
    from pipeline.stages.data.notmnist import source_digest

    data, holdout = cfg.data, cfg.retrain.holdout
    assert isinstance(data, NotMnistDataConfig)  # the CLI checks these three
    assert data.path
    assert holdout.path
    from mlflow.tracking import MlflowClient

    name = cfg.registry.model_name
    client = MlflowClient(store.uri)
    data_digest = source_digest(data.path, data.format)
    holdout_digest = source_digest(holdout.path, holdout.format)
    training_cfg = cfg.training()
    digest = config_digest(training_cfg)
    identity = fingerprint(data_digest, digest, holdout_digest)
    audit.tags(
        {
            Tag.DATA_SOURCE_DIGEST: data_digest,
            Tag.HOLDOUT_DIGEST: holdout_digest,
            Tag.CONFIG_DIGEST: digest,
            Tag.FINGERPRINT: identity,
            Tag.DATA_SOURCE: data.path,
            Tag.HOLDOUT_PATH: holdout.path,
        }
    )
    reg.ensure_model(client, name)
    champion = reg.alias_version(client, name, reg.CHAMPION)
    before = str(champion.version) if champion else None
    if not cfg.retrain.force:
        for current in (champion, reg.alias_version(client, name, reg.CHALLENGER)):
            tags = current.tags if current else {}
            if current and tags.get(Tag.FINGERPRINT) == identity and tags.get(Tag.DECISION):
                reason = (
                    f"data unchanged: version {current.version} ({tags[Tag.DECISION]}) was "
                    "trained on the same data, config and holdout (retrain.force=true trains "
                    "anyway)"
                )
                log.info("Skipped: %s", reason)
                return Outcome("skipped", reason, champion_before=before, champion_after=before)

    # train the challenger: the normal pipeline run, holdout images kept out of its data
    training_cfg = training_cfg.model_copy(
        update={
            "data": data.model_copy(
                update={"exclude_path": holdout.path, "exclude_format": holdout.format}
            )
        }
    )
    if before_training is not None:
        before_training()
    from pipeline.jobs.training import run

    run(training_cfg, overrides, started=started)
    training_run_id = recorder.last_run_id()
    assert training_run_id is not None
    last = client.get_run(training_run_id)
    overlap = last.data.metrics.get(Metric.HOLDOUT_OVERLAP_REMOVED, 0.0)
    audit.metrics({Metric.HOLDOUT_OVERLAP_REMOVED: overlap})
    client.set_tag(training_run_id, Tag.AUDIT_RUN_ID, audit.run_id)

    # register it: tags and description first, the alias only once it is complete
    version_tags = {
        Tag.DATA_SOURCE_DIGEST: data_digest,
        Tag.HOLDOUT_DIGEST: holdout_digest,
        Tag.CONFIG_DIGEST: digest,
        Tag.FINGERPRINT: identity,
        Tag.TRAINING_RUN_ID: training_run_id,
        Tag.AUDIT_RUN_ID: audit.run_id,
    }
    version = reg.register(
        name,
        reg.logged_model_id(client, training_run_id),
        version_tags,
        f"Challenger trained by run {training_run_id} on data {data_digest[:12]}; "
        "holdout evaluation pending.",
    )
    number = str(version.version)
    client.set_registered_model_alias(name, reg.CHALLENGER, number)
    log.info("Registered %s version %s (alias %s)", name, number, reg.CHALLENGER)

    # both models on the same holdout arrays, in this process
    split, holdout_digest = _load_holdout(cfg)
    challenger_scores = score(f"models:/{name}/{number}", split)
    champion_scores = score(f"models:/{name}/{champion.version}", split) if champion else None
    verdict = decide(
        challenger_scores, champion_scores, cfg.retrain.min_delta, cfg.retrain.max_letter_drop
    )
    decision = "promoted" if verdict.promote else "kept"
    _record_scores(audit, challenger_scores, champion_scores, verdict, decision, overlap)

    readable = _describe(decision, verdict.reason, challenger_scores, champion, data_digest)
    client.update_model_version(name, number, description=readable)
    for key, value in {
        **{k: f"{v:.4f}" for k, v in challenger_scores.metrics().items()},
        Tag.DECISION: decision,
        Tag.REASON: verdict.reason,
    }.items():
        client.set_model_version_tag(name, number, key, value)
    if champion and champion_scores and champion.tags.get(Tag.HOLDOUT_DIGEST) != holdout_digest:
        # the holdout changed: the champion's recorded scores are now those on the new one
        for key, value in {
            **{k: f"{v:.4f}" for k, v in champion_scores.metrics().items()},
            Tag.HOLDOUT_DIGEST: holdout_digest,
        }.items():
            client.set_model_version_tag(name, str(champion.version), key, value)
    after = before
    if verdict.promote:
        reg.set_champion(client, name, number)
        client.delete_registered_model_alias(name, reg.CHALLENGER)
        after = number
    log.info(
        "%s: version %s (%s); champion %s -> %s",
        decision.capitalize(),
        number,
        verdict.reason,
        before,
        after,
    )
    return Outcome(
        decision,
        verdict.reason,
        version=number,
        champion_before=before,
        champion_after=after,
        training_run_id=training_run_id,
        details={"challenger": challenger_scores, "champion": champion_scores},
    )


def _load_holdout(cfg: RetrainAppConfig) -> tuple[Split, str]:
    from pipeline.stages.data.notmnist import load_holdout

    holdout = cfg.retrain.holdout
    assert holdout.path is not None
    convert = isinstance(cfg.data, NotMnistDataConfig) and cfg.data.convert
    cache_dir = cfg.data.cache_dir
    return load_holdout(holdout.path, holdout.format, convert, holdout.allow_pickle, cache_dir)


def score(uri: str, holdout: Split) -> Scores:
    """A registered model's holdout scores (`pipeline.stages.evaluate`, dropout off)."""
    from pipeline.stages.data import CLASSES
    from pipeline.stages.evaluate import evaluate
    from pipeline.stages.train import compile_model, make_optimizer

    model = load_keras(uri)
    compile_model(model, make_optimizer("sgd", 0.1), steps_per_execution=1)
    result = evaluate(model, holdout, CLASSES)
    return Scores(
        accuracy=result.accuracy,
        macro_f1=result.macro_f1,
        loss=result.loss,
        per_class={str(k): float(v) for k, v in result.per_class["recall"].items()},
    )


def _record_scores(
    audit: Audit,
    challenger: Scores,
    champion: Scores | None,
    verdict: Decision,
    decision: str,
    overlap: float,
) -> None:
    import pandas as pd

    metrics = challenger.metrics("challenger.")
    table = pd.DataFrame({"challenger": challenger.per_class})
    if champion is not None:
        metrics.update(champion.metrics("champion."))
        table["champion"] = pd.Series(champion.per_class)
        table["change"] = table["challenger"] - table["champion"]
    table.index.name = "letter"
    audit.metrics(metrics)
    audit.table(table, Artifact.HOLDOUT_PER_CLASS)
    audit.json(
        {
            "decision": decision,
            "reason": verdict.reason,
            "holdout_overlap_removed": overlap,
            "challenger": challenger.metrics(),
            "champion": champion.metrics() if champion else None,
        },
        Artifact.DECISION,
    )


def _describe(decision: str, reason: str, scores: Scores, champion: Any, data_digest: str) -> str:
    """The version's description, as a person reads it on the Models page."""
    against = f"champion version {champion.version}" if champion else "no champion"
    return (
        f"{decision.upper()} against {against}: {reason}.\n\n"
        f"Holdout: accuracy {scores.accuracy:.4f}, macro-F1 {scores.macro_f1:.4f}, "
        f"loss {scores.loss:.4f}. Data digest {data_digest[:12]}."
    )


def manual(cfg: RetrainAppConfig, action: str, version: str | None = None) -> Outcome:
    """`promote VERSION` or `rollback` by hand: the alias moves under the retrain lock, and
    the change is an audit run like any retraining attempt."""
    from mlflow.tracking import MlflowClient

    name = cfg.registry.model_name
    return _audited(
        cfg, action, lambda store, _: _move(MlflowClient(store.uri), name, action, version)
    )


def _move(client: MlflowClient, name: str, action: str, version: str | None) -> Outcome:
    current = reg.alias_version(client, name, reg.CHAMPION)
    before = str(current.version) if current else None
    if action == "rollback":
        target = reg.rollback_target(client, name)
        if target is None:
            reason = "no previous champion to roll back to"
            return Outcome("refused", reason, champion_before=before, champion_after=before)
        reg.restore_champion(client, name, target[1])
        reason = f"rolled back by hand from version {target[0]} to {target[1]}"
        after = target[1]
    else:
        assert version is not None
        client.get_model_version(name, version)  # an unknown version fails here, by name
        if version == before:
            reason = f"version {version} is already the champion"
            return Outcome("refused", reason, champion_before=before, champion_after=before)
        reg.set_champion(client, name, version)
        reason = f"promoted by hand (champion was {before})"
        after = version
    # the version keeps its gate decision; the move by hand is noted beside it
    client.set_model_version_tag(name, after, Tag.MANUAL, f"{action} by hand")
    return Outcome(f"manual_{action}", reason, champion_before=before, champion_after=after)
