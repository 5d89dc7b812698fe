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


def test_metrics_are_logged_at_the_precision_they_have(store_uri: str) -> None:
    """Keras' float32 metrics reach the runs table as 0.976, not 0.9760000109672546, per
    epoch and once; each still is the same float32, and history.csv says the same."""
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from pipeline.reporting.drawings import LearningCurves
    from pipeline.tracking.recording.protocol import LogTraining
    from pipeline.tracking.recording.records import log_epoch, log_metrics, log_training
    from pipeline.tracking.store.connect import connect

    noisy = float(np.float32(0.976))
    history = pd.DataFrame(
        {"loss": [float(np.float32(0.5123)), noisy], "accuracy": [noisy, noisy]},
        index=pd.Index([1, 2], name="epoch"),
    )
    history["val_loss"], history["val_accuracy"] = history["loss"], history["accuracy"]
    experiment = connect(store_uri, "exp").experiment_id
    with mlflow.start_run(experiment_id=experiment) as run:  # the helper's active run
        run_id = run.info.run_id
        for step, row in history.iterrows():
            log_epoch(run_id, int(step), row.to_dict())
        log_metrics({"test_accuracy": noisy, "seconds.train": 1.23456789012})
        log_training(LogTraining(history, False, LearningCurves(history, best_epoch=2)))
    client = MlflowClient(store_uri)
    logged = client.get_run(run_id).data.metrics
    assert logged["test_accuracy"] == 0.976
    assert logged["seconds.train"] == 1.23456789012  # a float64 wall time, as measured
    steps = [p.value for p in client.get_metric_history(run_id, "loss")]
    assert steps == [0.5123, 0.976]
    assert [np.float32(v) for v in steps] == [np.float32(v) for v in history["loss"]]
    csv = Path(client.download_artifacts(run_id, "training/history.csv")).read_text()
    assert "0.976," in csv
    assert "0.97600001" not in csv
