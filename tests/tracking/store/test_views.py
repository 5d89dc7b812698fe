"""The saved views' filters, run by MLflow's own search on a store with a run of every kind:
the comparison shows finished training runs and sweep jobs only, the audit view the audit
runs."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from pipeline.names import ExperimentTag, Kind, Tag
from pipeline.tracking.store.connect import connect
from pipeline.tracking.store.views import AUDIT_VIEW_KEY, VIEW_KEY


def test_the_comparison_view_shows_comparable_training_runs_only(store_uri: str) -> None:
    store = connect(store_uri, "exp")
    client = MlflowClient(store_uri)
    made = {}
    for kind in Kind.ALL:
        run = client.create_run(store.experiment_id, run_name=kind, tags={Tag.KIND: kind})
        client.set_terminated(run.info.run_id, "FINISHED")
        made[kind] = run.info.run_id
    failed = client.create_run(store.experiment_id, tags={Tag.KIND: Kind.TRAINING})
    client.set_terminated(failed.info.run_id, "FAILED")
    untagged = client.create_run(store.experiment_id)  # a run from before the kind tag
    client.set_terminated(untagged.info.run_id, "FINISHED")

    tags = client.get_experiment(store.experiment_id).tags

    def shown(key: str) -> set[str]:
        view = json.loads(tags[f"{ExperimentTag.SHARED_VIEW_PREFIX}{key}"])
        found = client.search_runs([store.experiment_id], view["searchFilter"])
        return {r.info.run_id for r in found}

    assert shown(VIEW_KEY) == {made[Kind.TRAINING], made[Kind.SWEEP_JOB]}
    assert shown(AUDIT_VIEW_KEY) == {made[Kind.AUDIT]}
    audit = json.loads(tags[f"{ExperimentTag.SHARED_VIEW_PREFIX}{AUDIT_VIEW_KEY}"])
    assert f"tags.`{Tag.DECISION}`" in audit["selectedColumns"]
    assert f"tags.`{Tag.CHAMPION_AFTER}`" in audit["selectedColumns"]
