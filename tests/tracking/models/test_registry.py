"""The registry's reading of its own records, on a real SQLite registry without training:
which version holds a set-up, and a description's history that stays within MLflow's limit."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from pipeline.names import Tag
from pipeline.tracking.models import registry as reg
from pipeline.tracking.store.connect import connect


def _registry(store_uri: str) -> tuple[MlflowClient, str]:
    store = connect(store_uri, "exp")
    client = MlflowClient(store_uri, registry_uri=store_uri)
    client.create_registered_model("m")
    return client, store.experiment_id


def _version(client: MlflowClient, experiment_id: str, fingerprint: str, **tags: str) -> str:
    """A version whose training run holds `fingerprint`, as retraining registers one."""
    run = client.create_run(experiment_id, tags={Tag.FINGERPRINT: fingerprint})
    client.set_terminated(run.info.run_id)
    made = client.create_model_version(
        "m", "file:///nowhere", tags={Tag.TRAINING_RUN_ID: run.info.run_id, **tags}
    )
    return str(made.version)


def test_any_decided_version_holds_its_set_up_the_champion_first(store_uri: str) -> None:
    client, experiment = _registry(store_uri)
    old = _version(client, experiment, "same", **{Tag.DECISION: "promoted"})
    _version(client, experiment, "other", **{Tag.DECISION: "kept"})
    undecided = _version(client, experiment, "late")  # its attempt died before the gate
    assert str(reg.trained_on(client, "m", "same").version) == old  # no alias on it
    assert reg.trained_on(client, "m", "late") is None
    assert reg.trained_on(client, "m", "new") is None
    champion = _version(client, experiment, "same", **{Tag.DECISION: "promoted"})
    client.set_registered_model_alias("m", reg.CHAMPION, champion)
    assert str(reg.trained_on(client, "m", "same").version) == champion
    # a version from before the training run held it: its own tag
    legacy = client.create_model_version(
        "m", "file:///nowhere", tags={Tag.FINGERPRINT: "legacy", Tag.DECISION: "kept"}
    )
    assert str(reg.trained_on(client, "m", "legacy").version) == str(legacy.version)
    # a training run id that is no run id is not looked up
    client.set_model_version_tag("m", undecided, Tag.TRAINING_RUN_ID, "../../etc")
    assert reg.training_run_tags(client, client.get_model_version("m", undecided)) == {}


def test_a_versions_history_keeps_its_head_and_the_newest_lines(store_uri: str) -> None:
    client, experiment = _registry(store_uri)
    version = _version(client, experiment, "x")
    client.update_model_version("m", version, description="**KEPT** against champion v1.")
    reg.note(client, "m", version, "rolled back", "champion returned to v1")
    text = client.get_model_version("m", version).description
    assert text.startswith("**KEPT** against champion v1.\n\n**History**\n- rolled back on ")
    assert text.endswith(" UTC: champion returned to v1")
    for i in range(120):
        reg.note(client, "m", version, "re-scored", f"entry {i} " + "x" * 40)
    text = client.get_model_version("m", version).description
    assert len(text) <= reg.DESCRIPTION_LIMIT
    assert text.startswith("**KEPT** against champion v1.")
    assert text.endswith("entry 119 " + "x" * 40)
    assert "rolled back on" not in text  # the oldest line gave way
