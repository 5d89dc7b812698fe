"""`python -m pipeline.reproduce <run id>`: a past run retrained from what it logged gives the
same metrics, and says so metric by metric."""

from __future__ import annotations

import pytest
from conftest import cli
from mlflow.tracking import MlflowClient
from models_fixture import Champion


@pytest.mark.slow
def test_reproducing_a_run_gives_identical_metrics(champion: Champion) -> None:
    result = cli("reproduce", champion.run_id, env=champion.env())
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    rows = {line.split()[0]: line for line in lines if line.split() and "identical" in line}
    for metric in ("test_accuracy", "test_loss", "best_val_loss", "loss", "val_accuracy"):
        assert metric in rows
    assert not any(line.split()[0].startswith("seconds.") for line in lines if line.split())
    assert f"reproduces run {champion.run_id} metric for metric" in result.stdout
    client = MlflowClient(champion.store_uri)
    [again] = client.search_runs(
        [client.get_run(champion.run_id).info.experiment_id],
        f"tags.reproduces = '{champion.run_id}'",
    )
    assert again.info.status == "FINISHED"
    assert again.data.tags["kind"] == "reproduction"
    assert again.data.metrics["test_accuracy"] == champion.test_accuracy
