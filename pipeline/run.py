"""One tracked run: data -> model -> train -> evaluate, stages called with explicit arguments."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import mlflow

from pipeline import plots, tracking
from pipeline.callbacks import MlflowEpochLogger
from pipeline.config import AppConfig, DataConfig
from pipeline.data import Dataset, load_synthetic
from pipeline.data.notmnist import load_notmnist
from pipeline.evaluate import evaluate
from pipeline.model import build_model, flops_per_example
from pipeline.train import fit, make_optimizer, seed_everything

log = logging.getLogger(__name__)

_LOADERS: dict[str, Callable[..., Dataset]] = {
    "synthetic": load_synthetic,
    "notmnist": load_notmnist,
}


def load_data(cfg: DataConfig) -> Dataset:
    """Dispatch on `data.source`; every other data field is the loader's keyword argument."""
    return _LOADERS[cfg.source](**cfg.model_dump(exclude={"source"}))


def run(
    cfg: AppConfig, overrides: Sequence[str] = (), parent_run_id: str | None = None
) -> dict[str, float]:
    """Train and evaluate one configuration inside one MLflow run; return its final metrics.

    The run is opened first, so a failure in any stage (bad data file included) is recorded
    as a FAILED run with its traceback rather than lost.
    """
    store = tracking.connect(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_location
    )
    run_name = cfg.tracking.run_name
    with tracking.tracked_run(store, run_name, parent_run_id) as active:
        run_id = active.info.run_id
        tracking.log_config(cfg.model_dump(mode="json"), overrides)

        dataset = load_data(cfg.data)
        tracking.log_dataset(dataset)

        seed_everything(cfg.train.seed)
        model = build_model(
            hidden_units=cfg.model.hidden_units,
            dropout_rate=cfg.model.dropout_rate,
            l2_beta=cfg.model.l2_beta,
            num_classes=len(dataset.classes),
            image_shape=dataset.train.images.shape[1:],
            name=cfg.model.name,
        )
        forward_flops, train_flops = flops_per_example(model)
        mlflow.log_metrics(
            {
                "param_count": model.count_params(),
                "flops_forward_per_example": forward_flops,
                "flops_train_step_per_example": train_flops,
            }
        )

        es = cfg.train.early_stopping
        result = fit(
            model,
            dataset.train,
            dataset.valid,
            optimizer=make_optimizer(
                cfg.train.optimizer,
                cfg.train.learning_rate,
                momentum=cfg.train.momentum,
                decay_rate=cfg.train.lr_decay.rate,
                decay_steps=cfg.train.lr_decay.steps,
                staircase=cfg.train.lr_decay.staircase,
            ),
            epochs=cfg.train.epochs,
            batch_size=cfg.train.batch_size,
            early_stopping_monitor=es.monitor if es.enabled else None,
            patience=es.patience,
            min_delta=es.min_delta,
            callbacks=[MlflowEpochLogger(run_id)],
            verbose=cfg.train.verbose,
        )
        evaluation = evaluate(model, dataset.test, dataset.classes)

        metrics = {
            **evaluation.metrics("test_"),
            "test_macro_f1": float(evaluation.per_class["f1-score"].mean()),
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
            "best_val_loss": float(result.best["val_loss"]),
            "best_val_accuracy": float(result.best["val_accuracy"]),
            "train_seconds": result.seconds,
        }
        mlflow.log_metrics(metrics)
        mlflow.set_tag("stopped_early", str(result.stopped_early).lower())
        tracking.log_table(result.history, "training/history.csv")
        tracking.log_table(evaluation.per_class, "evaluation/per_class.csv")
        mlflow.log_figure(
            plots.learning_curves_figure(result.history, result.best_epoch),
            "figures/learning_curves.png",
        )
        mlflow.log_figure(
            plots.confusion_matrix_figure(evaluation.confusion, dataset.classes),
            "figures/confusion_matrix.png",
        )
        mlflow.log_figure(
            plots.misclassified_figure(
                dataset.test.images, dataset.test.labels, evaluation.predictions, dataset.classes
            ),
            "figures/misclassified.png",
        )
        if cfg.tracking.log_model:
            model_uri = tracking.log_keras_model(model, dataset.test.images[:5])
            log.info("Model: %s", model_uri)

    log.info(
        "Test accuracy %.4f (best epoch %d of %d). Run %s in experiment '%s' at %s",
        metrics["test_accuracy"],
        result.best_epoch,
        len(result.history),
        run_id,
        store.experiment,
        store.uri,
    )
    log.info("Open it: %s", store.ui_hint(run_id))
    return metrics
