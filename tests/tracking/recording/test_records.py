"""What a run records: config params."""

from __future__ import annotations

from pathlib import Path

from pipeline.tracking.recording.records import flatten


def test_flatten_dots_nested_keys() -> None:
    flat = flatten({"train": {"early_stopping": {"patience": 3}, "epochs": 2}, "a": 1})
    assert flat == {"train.early_stopping.patience": 3, "train.epochs": 2, "a": 1}


def test_long_lists_are_logged_as_a_digest_and_kept_in_full_in_the_config(
    store_uri: str,
) -> None:
    import mlflow
    import yaml
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.recording.records import log_config
    from pipeline.tracking.store.connect import connect

    fonts = [f"Font{i}.ttf" for i in range(23)]
    config = {"data": {"fonts": fonts}, "model": {"hidden_units": [64, 32]}}
    experiment = connect(store_uri, "exp").experiment_id
    with mlflow.start_run(experiment_id=experiment) as run:  # the helper's active run
        log_config(config)
    client = MlflowClient(store_uri)
    params = client.get_run(run.info.run_id).data.params
    assert params["model.hidden_units"] == "[64, 32]"  # short lists stay readable
    digest = params["data.fonts"]
    assert digest.startswith("23 items sha256:")
    assert len(digest) == len("23 items sha256:") + 8
    with mlflow.start_run(experiment_id=experiment) as other:
        log_config({"data": {"fonts": fonts[::-1]}})
    assert client.get_run(other.info.run_id).data.params["data.fonts"] != digest
    saved = yaml.safe_load(
        Path(client.download_artifacts(run.info.run_id, "config/config.yaml")).read_text()
    )
    assert saved["data"]["fonts"] == fonts
