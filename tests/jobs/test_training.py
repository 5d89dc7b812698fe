"""End to end: one run into a temporary MLflow store holds everything the issue promises."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.jobs.training import load_data, run
from pipeline.stages.data import DataError
from pipeline.tracking.runs.lifecycle import git_tags

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory):
    """One tiny run shared by the checks below (a run costs seconds)."""
    from conftest import TINY, settings

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    overrides = ["train.epochs=4", "model.l2_beta=0.001"]
    cfg = settings(*TINY, f"tracking.uri={uri}", "tracking.experiment=e2e", *overrides)
    metrics = run(cfg, overrides=overrides)
    client = MlflowClient(uri)
    [found] = client.search_runs(client.get_experiment_by_name("e2e").experiment_id)
    return cfg, metrics, client, found


def test_run_finished_with_dotted_params(finished) -> None:
    cfg, _, _, found = finished
    assert found.info.status == "FINISHED"
    params = found.data.params
    assert params["model.hidden_units"] == "[32]"
    assert params["model.dropout_rate"] == "0.5"
    assert params["train.early_stopping.patience"] == str(cfg.train.early_stopping.patience)
    assert params["train.lr_decay.rate"] == "1.0"
    assert params["data.source"] == "synthetic"


def test_metric_histories_have_one_point_per_epoch(finished) -> None:
    _, metrics, client, found = finished
    epochs = int(metrics["epochs_run"])
    names = ("loss", "accuracy", "val_loss", "val_accuracy", "val_data_loss", "l2_penalty")
    for name in names:
        history = client.get_metric_history(found.info.run_id, name)
        assert [m.step for m in history] == list(range(1, epochs + 1)), name
    # the penalty-free valid loss plus the L2 penalty is Keras' val_loss, every epoch
    history = {
        name: [m.value for m in client.get_metric_history(found.info.run_id, name)]
        for name in ("val_loss", "val_data_loss", "l2_penalty")
    }
    assert min(history["l2_penalty"]) > 0
    assert history["val_loss"] == pytest.approx(
        np.add(history["val_data_loss"], history["l2_penalty"]), rel=1e-5
    )
    assert found.data.tags["overrides"] == "train.epochs=4 model.l2_beta=0.001"


def test_best_epoch_metrics_are_the_restored_epoch(finished) -> None:
    _, metrics, client, found = finished
    val_loss = {m.step: m.value for m in client.get_metric_history(found.info.run_id, "val_loss")}
    val_acc = {
        m.step: m.value for m in client.get_metric_history(found.info.run_id, "val_accuracy")
    }
    best = int(found.data.metrics["best_epoch"])
    assert best == min(val_loss, key=val_loss.get)
    assert found.data.metrics["best_val_loss"] == pytest.approx(val_loss[best])
    assert found.data.metrics["best_val_accuracy"] == pytest.approx(val_acc[best])
    assert metrics["best_epoch"] == best


def test_summary_metrics_and_tags(finished) -> None:
    cfg, metrics, _, found = finished
    logged = found.data.metrics
    assert logged["param_count"] == (784 + 1) * 32 + (32 + 1) * 10
    assert logged["flops_train_step_per_example"] == 3 * logged["flops_forward_per_example"]
    assert logged["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    phases = {"startup", "data", "build", "train", "evaluate", "logging", "logging_per_epoch"}
    assert {k.removeprefix("seconds.") for k in logged if k.startswith("seconds.")} == phases
    assert all(logged[f"seconds.{p}"] > 0 for p in phases)
    assert logged["test_loss"] > 0
    tags = found.data.tags
    dataset = load_data(cfg.data)
    assert tags["data.digest"] == dataset.digest()
    assert tags["data.digest.test"] == dataset.test.digest()
    assert tags["data.format"] == "synthetic"
    assert tags["kind"] == "training"  # one run, no parent
    # logged at the precision they have: a float32's shortest decimal, no noise digits
    assert logged["best_val_accuracy"] == float(str(np.float32(logged["best_val_accuracy"])))
    commit = git_tags().get("mlflow.source.git.commit")  # None outside a git checkout
    assert tags.get("mlflow.source.git.commit") == commit
    inputs = {d.dataset.name: d.dataset.digest for d in found.inputs.dataset_inputs}
    assert inputs["synthetic-train"] == dataset.train.digest()[:32]


def test_artifacts(finished) -> None:
    _, _, client, found = finished
    run_id = found.info.run_id

    def listing(path: str = "") -> set[str]:
        return {a.path for a in client.list_artifacts(run_id, path)}

    assert {"config", "data", "evaluation", "figures", "training"} <= listing()
    assert listing("figures") == {
        "figures/confusion_matrix.png",
        "figures/learning_curves.png",
        "figures/misclassified.png",
    }
    assert listing("config") == {"config/config.yaml", "config/overrides.yaml"}
    per_class = pd.read_csv(client.download_artifacts(run_id, "evaluation/per_class.csv"))
    assert per_class["class"].tolist() == list("ABCDEFGHIJ")
    counts = pd.read_csv(client.download_artifacts(run_id, "data/class_counts.csv"))
    assert counts["test"].sum() == 100
    overrides = Path(client.download_artifacts(run_id, "config/overrides.yaml")).read_text()
    assert "train.epochs=4" in overrides


def test_logged_model_predicts_raw_pixels_with_the_reported_accuracy(finished) -> None:
    cfg, metrics, client, found = finished
    [logged] = client.search_logged_models(experiment_ids=[found.info.experiment_id])
    assert logged.source_run_id == found.info.run_id
    model = mlflow.pyfunc.load_model(logged.artifact_location)  # (models:/ needs a global URI)
    test = load_data(cfg.data).test
    probabilities = np.asarray(model.predict(test.images))  # raw uint8, 0-255
    accuracy = float((probabilities.argmax(axis=1) == test.labels).mean())
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    signature = model.metadata.signature.inputs.to_dict()[0]
    assert signature["tensor-spec"] == {"dtype": "float64", "shape": (-1, 28, 28)}


def test_same_config_same_metrics(finished, tiny) -> None:
    cfg, metrics, _, _ = finished
    again = run(cfg)
    timings = {k: v for k, v in again.items() if k.startswith("seconds.")}
    assert again == {**metrics, **timings}


def test_failing_stage_marks_the_run_failed(tiny, store_uri: str) -> None:
    cfg = tiny("data.fonts=[NoSuchFont.ttf]", "tracking.experiment=broken")
    with pytest.raises(DataError, match=r"NoSuchFont\.ttf"):
        run(cfg)
    client = MlflowClient(store_uri)
    [failed] = client.search_runs(client.get_experiment_by_name("broken").experiment_id)
    assert failed.info.status == "FAILED"
    assert "NoSuchFont.ttf" in failed.data.tags["error"]


def test_work_done_meanwhile_is_waited_for_and_its_error_raised() -> None:
    """The run's data record is made in a thread while the model trains: the run does not
    end before it is sent, and its failure fails the run (not masking the run's own)."""
    from pipeline.jobs.training import Meanwhile

    done: list[str] = []

    def slow() -> None:
        time.sleep(0.2)
        done.append("sent")

    def fail() -> None:
        raise ValueError("card")

    def both() -> None:
        with Meanwhile() as meanwhile:
            meanwhile(fail)
            raise KeyError("the run's own")

    with Meanwhile() as meanwhile:
        meanwhile(slow)
    assert done == ["sent"]
    with pytest.raises(ValueError, match="card"), Meanwhile() as meanwhile:
        meanwhile(fail)
    with pytest.raises(KeyError):
        both()
