"""Retraining with a registry: skip when nothing changed, else train a challenger, score it and
the champion on the same frozen holdout, and promote it only through the gate.

Every attempt is one audit run in the `retraining` experiment (`pipeline.tracking.runs.audit`),
under a lock per registered model (`pipeline.tracking.store.locks.store_lock`), so two attempts
never overlap and cron may call this as often as it likes. The gate itself (`decide`) and
the identity of a training set-up (`config_digest`, `fingerprint`) are pure functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.config import AppConfig, RetrainAppConfig
from pipeline.config.schema import NotMnistDataConfig
from pipeline.errors import LockedOutError, PipelineError, RegistryError
from pipeline.names import Artifact, Kind, Metric, Tag
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

    def run_name(self, action: str) -> str:
        """The audit run's name, as the runs table shows it: the action, the decision and the
        champion's move (`retrain: promoted v3`, `rollback: v3 → v1`)."""
        words = self.decision.replace("_", " ")
        if self.decision == "promoted":
            said = f"promoted v{self.version}"
            if self.champion_before:
                said += f" (was v{self.champion_before})"
        elif self.decision == "kept":
            said = f"kept v{self.version} (champion v{self.champion_before})"
        elif self.decision == "skipped" and self.details.get("holder"):
            said = f"skipped: v{self.details['holder']} holds this data"
        elif self.decision.startswith("manual_"):
            said = f"v{self.champion_before} → v{self.champion_after}"
        else:
            said = words
        return f"{action}: {said}"

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
    tags = {Tag.RETRAIN_ACTION: action, Tag.MODEL_NAME: name, Tag.KIND: Kind.AUDIT}
    with reg.server_errors():
        store = open_store(cfg.tracking, cfg.retrain.experiment)
        with audit_run(store, action, tags) as au, reg.server_errors():
            try:
                with store_lock(store.uri, f"retrain-{name}", 0, cfg.retrain.lock):
                    outcome = attempt(store, au)
            except LockHeldError as exc:
                outcome = Outcome("locked_out", str(exc))
                au.tags({Tag.LOCK_HOLDER: json.dumps(exc.holder)})
            except BaseException as exc:  # the run ends FAILED or KILLED: its name says so
                ended = "killed" if isinstance(exc, KeyboardInterrupt) else "failed"
                with contextlib.suppress(Exception):
                    au.client.update_run(au.run_id, name=f"{action}: {ended}")
                raise
            outcome.audit_run_id = au.run_id
            au.tags(outcome.audit_tags())
            au.client.update_run(au.run_id, name=outcome.run_name(action))
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
        holder = reg.trained_on(client, name, identity)
        if holder is not None:
            held = reg.aliases(client, name).get(str(holder.version))
            decided = (holder.tags or {}).get(Tag.DECISION, "")
            said = f"{decided}; now {held}" if held else decided
            reason = (
                f"data unchanged: version {holder.version} ({said}) was already trained on the "
                "same data, config and holdout (retrain.force=true trains anyway)"
            )
            log.info("Skipped: %s", reason)
            return Outcome(
                "skipped",
                reason,
                champion_before=before,
                champion_after=before,
                details={"holder": str(holder.version)},
            )

    # train the challenger: the normal pipeline run, holdout images kept out of its data
    training_cfg = training_cfg.model_copy(
        update={
            "data": data.model_copy(
                update={"exclude_path": holdout.path, "exclude_format": holdout.format}
            )
        }
    )
    if not training_cfg.tracking.run_name:
        tracking = training_cfg.tracking.model_copy(
            update={"run_name": f"retrain {name} challenger (data {data_digest[:8]})"}
        )
        training_cfg = training_cfg.model_copy(update={"tracking": tracking})
    if before_training is not None:
        before_training()
    from pipeline.jobs.training import run

    # the training run holds what it was trained on: a later attempt on the same three
    # digests finds its version through it (`registry.trained_on`)
    identity_tags = {
        Tag.KIND: Kind.RETRAIN_CHALLENGER,
        Tag.MODEL_NAME: name,
        Tag.DATA_SOURCE_DIGEST: data_digest,
        Tag.HOLDOUT_DIGEST: holdout_digest,
        Tag.CONFIG_DIGEST: digest,
        Tag.FINGERPRINT: identity,
        Tag.AUDIT_RUN_ID: audit.run_id,
    }
    run(training_cfg, overrides, started=started, tags=identity_tags)
    training_run_id = recorder.last_run_id()
    assert training_run_id is not None
    last = client.get_run(training_run_id)
    overlap = last.data.metrics.get(Metric.HOLDOUT_OVERLAP_REMOVED, 0.0)
    audit.metrics({Metric.HOLDOUT_OVERLAP_REMOVED: overlap})

    # register it: tags and description first, the alias only once it is complete
    version = reg.register(
        name,
        reg.logged_model_id(client, training_run_id),
        {Tag.TRAINING_RUN_ID: training_run_id},
        f"Challenger trained by run `{training_run_id}` on data `{data_digest[:12]}`; "
        "holdout evaluation pending.",
    )
    number = str(version.version)
    if not cfg.tracking.run_name:
        client.update_run(training_run_id, name=f"retrain {name} v{number} challenger")
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

    readable = _describe(
        Described(decision, verdict.reason, challenger_scores, champion_scores, before),
        Identity(data_digest, holdout_digest, digest, len(split.labels)),
        training_run_id,
        audit.run_id,
    )
    client.update_model_version(name, number, description=readable)
    for key, value in {**_version_scores(challenger_scores), Tag.DECISION: decision}.items():
        client.set_model_version_tag(name, number, key, value)
    if champion and champion_scores:
        _rescored(client, name, champion, champion_scores, holdout_digest)
    after = before
    if verdict.promote:
        reg.set_champion(client, name, number)
        client.delete_registered_model_alias(name, reg.CHALLENGER)
        after = number
        if before is not None:
            reg.note(client, name, before, "replaced as champion", f"by v{number}, by the gate")
        reg.note(client, name, number, "became champion", f"was {_v(before)}, by the gate")
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
    from pipeline.stages.data.sources import MAX_MEMBER_BYTES, MAX_TOTAL_BYTES

    holdout = cfg.retrain.holdout
    assert holdout.path is not None
    convert = isinstance(cfg.data, NotMnistDataConfig) and cfg.data.convert
    return load_holdout(
        path=holdout.path,
        format=holdout.format,
        convert=convert,
        allow_pickle=holdout.allow_pickle,
        cache_dir=cfg.data.cache_dir,
        max_member_bytes=MAX_MEMBER_BYTES,
        max_total_bytes=MAX_TOTAL_BYTES,
    )


def score(uri: str, holdout: Split) -> Scores:
    """A registered model's holdout scores (`pipeline.stages.evaluate`, dropout off)."""
    import keras

    from pipeline.stages.data import CLASSES
    from pipeline.stages.evaluate import evaluate
    from pipeline.stages.train import compile_model

    model = load_keras(uri)
    # scoring updates no weight: any optimizer does, and this is the one it always was
    compile_model(model, optimizer=keras.optimizers.SGD(0.1), steps_per_execution=1)
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


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"


def _version_scores(scores: Scores) -> dict[str, str]:
    """The scores a version keeps as tags (the Models page shows them as columns): holdout
    accuracy and macro-F1; the loss and the letters are in its description."""
    return {
        Metric.HOLDOUT_ACCURACY: f"{scores.accuracy:.4f}",
        Metric.HOLDOUT_MACRO_F1: f"{scores.macro_f1:.4f}",
    }


@dataclass(frozen=True)
class Described:
    """What the gate decided for a challenger, for its description."""

    decision: str
    reason: str
    scores: Scores
    champion: Scores | None
    champion_version: str | None


@dataclass(frozen=True)
class Identity:
    """What a challenger was trained and judged on: the three digests and the holdout's size."""

    data: str
    holdout: str
    config: str
    holdout_images: int


def _describe(said: Described, identity: Identity, training_run_id: str, audit_run_id: str) -> str:
    """The version's description in Markdown, as a person reads it on the Models page: the
    decision and why, the holdout scores, the per-letter table against the champion, what it
    was trained on, and (appended later, `registry.note`) what happened to it since."""
    scores, champion, against = said.scores, said.champion, said.champion_version
    lines = [
        f"**{said.decision.upper()}** against "
        f"{f'champion v{against}' if against else 'no champion'}: {said.reason}.",
        "",
        f"Holdout `{identity.holdout[:12]}` ({identity.holdout_images} images): accuracy "
        f"**{scores.accuracy:.4f}**, macro-F1 {scores.macro_f1:.4f}, loss {scores.loss:.4f}"
        + (
            f" (champion v{against}: accuracy {champion.accuracy:.4f}, macro-F1 "
            f"{champion.macro_f1:.4f})."
            if champion is not None
            else "."
        ),
        "",
    ]
    if champion is not None:
        lines += [f"| letter | accuracy | champion v{against} | change |", "|:--|--:|--:|--:|"]
        for letter, value in scores.per_class.items():
            old = champion.per_class.get(letter, float("nan"))
            lines.append(f"| {letter} | {value:.4f} | {old:.4f} | {value - old:+.4f} |")
    else:
        lines += ["| letter | accuracy |", "|:--|--:|"]
        lines += [f"| {letter} | {value:.4f} |" for letter, value in scores.per_class.items()]
    lines += [
        "",
        f"Trained by run `{training_run_id}` on data `{identity.data[:12]}` (config "
        f"`{identity.config[:12]}`); audit run `{audit_run_id}`.",
    ]
    return "\n".join(lines)


def _rescored(
    client: MlflowClient, name: str, champion: Any, scores: Scores, holdout_digest: str
) -> None:
    """The champion is scored anew by every attempt: when its recorded scores differ (the
    holdout changed), the tags take the new ones and its description says so."""
    version, tags = str(champion.version), champion.tags or {}
    fresh = _version_scores(scores)
    if all(tags.get(k) == v for k, v in fresh.items()):
        return
    for key, value in fresh.items():
        client.set_model_version_tag(name, version, key, value)
    reg.note(
        client,
        name,
        version,
        "re-scored",
        f"holdout `{holdout_digest[:12]}`: accuracy {fresh[Metric.HOLDOUT_ACCURACY]}, "
        f"macro-F1 {fresh[Metric.HOLDOUT_MACRO_F1]} (was {tags.get(Metric.HOLDOUT_ACCURACY, '?')}"
        f", {tags.get(Metric.HOLDOUT_MACRO_F1, '?')})",
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
        reg.note(client, name, target[0], "rolled back", f"champion returned to v{after}")
        reg.note(client, name, after, "champion again", f"rolled back from v{target[0]}")
    else:
        assert version is not None
        client.get_model_version(name, version)  # an unknown version fails here, by name
        if version == before:
            reason = f"version {version} is already the champion"
            return Outcome("refused", reason, champion_before=before, champion_after=before)
        reg.set_champion(client, name, version)
        reason = f"promoted by hand (champion was {before})"
        after = version
        if before is not None:
            reg.note(client, name, before, "replaced as champion", f"by v{version}, by hand")
        reg.note(client, name, version, "promoted by hand", f"champion was {_v(before)}")
    # the version keeps its gate decision; the move by hand is noted beside it
    client.set_model_version_tag(name, after, Tag.MANUAL, f"{action} by hand")
    return Outcome(f"manual_{action}", reason, champion_before=before, champion_after=after)
