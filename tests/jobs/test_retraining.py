"""Retraining: the gate and the set-up's identity (pure functions), then one registry taken
through first champion, skip, changed data promoted and kept, and a changed holdout."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from retrain_helpers import SMALL, Sources, retrain_settings

from pipeline.jobs.retraining import Scores, config_digest, decide, fingerprint, outcome_error
from pipeline.names import Artifact, Metric, Tag

LETTERS = "ABCDEFGHIJ"


def scores(accuracy: float, **letters: float) -> Scores:
    per_class = {k: letters.get(k, accuracy) for k in LETTERS}
    return Scores(accuracy=accuracy, macro_f1=accuracy, loss=1.0, per_class=per_class)


def test_first_valid_model_becomes_champion() -> None:
    verdict = decide(scores(0.2), None, min_delta=0.5, max_letter_drop=0.0)
    assert verdict.promote
    assert "no champion" in verdict.reason


def test_challenger_needs_champion_accuracy_plus_margin() -> None:
    assert decide(scores(0.91), scores(0.90), 0.01, 1.0).promote
    kept = decide(scores(0.905), scores(0.90), 0.01, 1.0)
    assert not kept.promote
    assert "0.9050 < champion's 0.9000 + min_delta 0.01" in kept.reason


def test_a_letter_falling_too_far_keeps_the_champion() -> None:
    better_but_worse_at_c = scores(0.95, C=0.70)
    kept = decide(better_but_worse_at_c, scores(0.90), 0.0, max_letter_drop=0.1)
    assert not kept.promote
    assert kept.reason.startswith("letter C")
    assert decide(better_but_worse_at_c, scores(0.90), 0.0, max_letter_drop=0.25).promote


def test_config_digest_ignores_where_data_lives_but_not_what_is_trained(tmp_path: Path) -> None:
    base = retrain_settings(*SMALL, "data.path=/a/x.tar.gz").training()
    moved = retrain_settings(*SMALL, "data.path=/b/y.tar.gz", "data.cache=false").training()
    quiet = retrain_settings(*SMALL, "data.path=/a/x.tar.gz", "train.verbose=2").training()
    other = retrain_settings(*SMALL, "data.path=/a/x.tar.gz", "model.l2_beta=0.01").training()
    split = retrain_settings(*SMALL, "data.path=/a/x.tar.gz", "data.seed=1").training()
    assert config_digest(base) == config_digest(moved) == config_digest(quiet)
    assert len({config_digest(base), config_digest(other), config_digest(split)}) == 3
    assert fingerprint("d", "c", "h") != fingerprint("d", "c", "h2")


# -- one registry, end to end (in this process: a training run costs seconds) --------------


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory):
    """The attempts, in order, on one store: (name, outcome) pairs plus the sources."""
    from pipeline.jobs.retraining import retrain

    root = tmp_path_factory.mktemp("retrain")
    src = Sources(root / "sources")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    common = (*SMALL, f"tracking.uri={uri}", f"data.cache_dir={root / 'cache'}")

    def attempt(data: str, holdout: str, *more: str):
        cfg = retrain_settings(
            *common, f"data.path={data}", f"retrain.holdout.path={holdout}", *more
        )
        return retrain(cfg, overrides=[f"data.path={data}"])

    outcomes = {
        "first": attempt(src.v1, src.holdout),
        "same": attempt(src.v1, src.holdout),
        "added": attempt(src.v2, src.holdout, "retrain.min_delta=-1", "retrain.max_letter_drop=1"),
        "removed": attempt(src.v3, src.holdout, "retrain.min_delta=1"),
        "new_holdout": attempt(src.v3, src.holdout2, "retrain.min_delta=1"),
    }
    return outcomes, MlflowClient(uri, registry_uri=uri), src, root


def audit_runs(client: MlflowClient):
    experiment = client.get_experiment_by_name("retraining")
    runs = client.search_runs([experiment.experiment_id], order_by=["attribute.start_time ASC"])
    return {r.info.run_id: r for r in runs}


@pytest.mark.slow
def test_first_retrain_makes_a_champion(history) -> None:
    outcomes, client, _, _ = history
    first = outcomes["first"]
    assert (first.decision, first.version, first.champion_after) == ("promoted", "1", "1")
    assert client.get_registered_model("notmnist").tags[Tag.CHAMPION_HISTORY] == "1,2"
    version = client.get_model_version("notmnist", "1")
    assert version.tags[Tag.DECISION] == "promoted"
    assert float(version.tags[Metric.HOLDOUT_ACCURACY]) > 0
    assert "PROMOTED" in version.description
    assert version.tags[Tag.TRAINING_RUN_ID] == first.training_run_id


@pytest.mark.slow
def test_same_data_again_is_skipped_without_a_new_version(history) -> None:
    outcomes, client, _, _ = history
    same = outcomes["same"]
    assert same.decision == "skipped"
    assert outcome_error(same) is None  # the command exits 0
    assert "data unchanged" in same.reason
    assert same.version is None
    audit = audit_runs(client)[same.audit_run_id]
    assert audit.data.tags[Tag.DECISION] == "skipped"
    assert Tag.TRAINING_RUN_ID not in audit.data.tags


@pytest.mark.slow
def test_changed_data_trains_a_challenger_promoted_or_kept_by_the_margin(history) -> None:
    outcomes, client, _, _ = history
    added, removed = outcomes["added"], outcomes["removed"]
    assert (added.decision, added.version, added.champion_before) == ("promoted", "2", "1")
    assert (removed.decision, removed.version) == ("kept", "3")
    assert removed.champion_before == removed.champion_after == "2"
    assert "min_delta 1" in removed.reason
    assert client.get_model_version("notmnist", "3").tags[Tag.DECISION] == "kept"
    # the audit run has both models' scores, the per-letter table and the ids to follow
    audit = audit_runs(client)[removed.audit_run_id]
    assert audit.info.status == "FINISHED"
    assert audit.data.tags[Tag.CHAMPION_BEFORE] == "2"
    assert audit.data.tags[Tag.CHALLENGER_VERSION] == "3"
    assert audit.data.tags[Tag.TRAINING_RUN_ID] == removed.training_run_id
    for who in ("challenger.", "champion."):
        for name in (Metric.HOLDOUT_ACCURACY, Metric.HOLDOUT_MACRO_F1, Metric.HOLDOUT_LOSS):
            assert f"{who}{name}" in audit.data.metrics
    table = client.download_artifacts(audit.info.run_id, Artifact.HOLDOUT_PER_CLASS)
    assert Path(table).read_text().splitlines()[0] == "letter,challenger,champion,change"
    # the last kept challenger (after the holdout change) holds `challenger`; promoted ones
    # gave it up
    aliases = client.get_registered_model("notmnist").aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "2", "challenger": "4"}


@pytest.mark.slow
def test_holdout_copies_are_removed_from_training_and_counted(history) -> None:
    outcomes, client, src, _ = history
    first = outcomes["first"]
    training = client.get_run(first.training_run_id)
    removed = training.data.metrics[Metric.HOLDOUT_OVERLAP_REMOVED]
    assert removed == Sources.LEAKED
    audit = audit_runs(client)[first.audit_run_id]
    assert audit.data.metrics[Metric.HOLDOUT_OVERLAP_REMOVED] == Sources.LEAKED
    assert training.data.params["data.exclude_path"] == src.holdout
    # the new holdout shares nothing with the data
    assert (
        client.get_run(outcomes["new_holdout"].training_run_id).data.metrics[
            Metric.HOLDOUT_OVERLAP_REMOVED
        ]
        == 0
    )


@pytest.mark.slow
def test_a_new_holdout_re_evaluates_the_champion_on_it(history) -> None:
    from pipeline.jobs.retraining import score
    from pipeline.stages.data.notmnist import load_holdout
    from pipeline.stages.data.sources import MAX_MEMBER_BYTES, MAX_TOTAL_BYTES

    outcomes, client, src, root = history
    changed = outcomes["new_holdout"]
    assert changed.decision == "kept"  # same data as before, but a new holdout: not skipped
    audit = audit_runs(client)[changed.audit_run_id]
    old = audit_runs(client)[outcomes["removed"].audit_run_id]
    assert audit.data.tags[Tag.HOLDOUT_DIGEST] != old.data.tags[Tag.HOLDOUT_DIGEST]
    split, digest = load_holdout(
        path=str(src.holdout2),
        format="auto",
        convert=False,
        allow_pickle=False,
        cache_dir=str(root / "cache"),
        max_member_bytes=MAX_MEMBER_BYTES,
        max_total_bytes=MAX_TOTAL_BYTES,
    )
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    fresh = score("models:/notmnist/2", split)
    recorded = audit.data.metrics[f"champion.{Metric.HOLDOUT_ACCURACY}"]
    assert recorded == pytest.approx(fresh.accuracy)
    assert recorded != old.data.metrics[f"champion.{Metric.HOLDOUT_ACCURACY}"]
    champion = client.get_model_version("notmnist", "2")
    assert champion.tags[Tag.HOLDOUT_DIGEST] == digest
    assert float(champion.tags[Metric.HOLDOUT_ACCURACY]) == pytest.approx(fresh.accuracy, abs=1e-4)


@pytest.mark.slow
def test_every_attempt_is_one_finished_audit_run(history) -> None:
    outcomes, client, _, _ = history
    runs = {
        k: r for k, r in audit_runs(client).items() if r.data.tags[Tag.RETRAIN_ACTION] == "retrain"
    }
    assert len(runs) == len(outcomes)
    assert {o.audit_run_id for o in outcomes.values()} == set(runs)
    assert {r.info.status for r in runs.values()} == {"FINISHED"}


# -- the registry command on the same registry (champions so far: 1, then 2) -------------


@pytest.mark.slow
def test_rollback_and_promote_move_the_champion_and_are_audited(history, capsys) -> None:
    from pipeline.cli.commands import COMMANDS
    from pipeline.cli.main import run

    _, client, _, _ = history
    store = f"tracking.uri={client.tracking_uri}"

    def registry(*args: str) -> int:
        return run(COMMANDS["registry"], [*args, store])

    def champion() -> str:
        return str(client.get_model_version_by_alias("notmnist", "champion").version)

    assert registry("rollback") == 0
    assert champion() == "1"
    assert "champion 2 -> 1" in capsys.readouterr().out
    assert registry("rollback") == 1  # nothing older than version 1
    assert "registry error: no previous champion" in capsys.readouterr().err
    assert champion() == "1"
    assert registry("promote", "3") == 0
    assert champion() == "3"
    assert registry("promote", "99") == 1
    assert "version=99" in capsys.readouterr().err
    assert champion() == "3"

    manual = [
        r for r in audit_runs(client).values() if r.data.tags[Tag.RETRAIN_ACTION] != "retrain"
    ]
    moves = [
        (r.data.tags[Tag.RETRAIN_ACTION], r.data.tags.get(Tag.CHAMPION_BEFORE), r.info.status)
        for r in manual
    ]
    assert moves == [
        ("rollback", "2", "FINISHED"),
        ("rollback", "1", "FINISHED"),
        ("promote", "1", "FINISHED"),
        ("promote", None, "FAILED"),  # no version 99: the error is the audit's
    ]
    assert manual[0].data.tags[Tag.CHAMPION_AFTER] == "1"
    assert manual[2].data.tags[Tag.DECISION] == "manual_promote"
    promoted = client.get_model_version("notmnist", "3").tags
    assert (promoted[Tag.DECISION], promoted[Tag.MANUAL]) == ("kept", "promote by hand")
    assert client.get_model_version("notmnist", "1").tags[Tag.MANUAL] == "rollback by hand"


@pytest.mark.slow
def test_registry_list_shows_versions_aliases_scores_and_decisions(history, capsys) -> None:
    from pipeline.cli.registry import run

    _, client, _, _ = history
    assert run(["list", f"tracking.uri={client.tracking_uri}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[1].split(), [line.split() for line in lines[2:]]
    assert header == [
        "version",
        "aliases",
        "accuracy",
        "macro_f1",
        "data_digest",
        "decision",
        "created",
    ]
    assert [row[0] for row in rows] == ["4", "3", "2", "1"]
    assert rows[1][1] == "champion"  # promoted by hand in the test before
    assert rows[0][1] == "challenger"
    accuracy = client.get_model_version("notmnist", "4").tags[Metric.HOLDOUT_ACCURACY]
    assert rows[0][2] == accuracy


def test_a_failed_attempt_is_a_failed_audit_run_with_its_error(
    tmp_path: Path, store_uri: str
) -> None:
    from pipeline.jobs.retraining import retrain
    from pipeline.stages.data import DataError

    src = Sources(tmp_path / "sources")
    missing = tmp_path / "no-such-holdout"
    cfg = retrain_settings(*SMALL, f"data.path={src.v1}", f"retrain.holdout.path={missing}")
    with pytest.raises(DataError, match="no-such-holdout"):
        retrain(cfg)
    [failed] = audit_runs(MlflowClient(store_uri)).values()
    assert failed.info.status == "FAILED"
    assert failed.data.tags[Tag.DECISION] == "failed"
    assert "no-such-holdout" in failed.data.tags[Tag.REASON]
