"""MLflow plumbing: where the store is, one run's life cycle, and what a run records.

Nothing here imports TensorFlow, so the sweep callback and the report can use it cheaply.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config import PROJECT_ROOT

if TYPE_CHECKING:
    from pipeline.data import Dataset
    from pipeline.evaluate import Evaluation
    from pipeline.train import TrainResult

log = logging.getLogger(__name__)

_SQLITE = "sqlite:///"


@dataclass(frozen=True)
class Store:
    """A resolved tracking store and the experiment runs go to."""

    uri: str
    experiment_id: str
    experiment: str

    def ui_hint(self, run_id: str) -> str:
        """How to look at a run: the server page, or the `mlflow ui` command for a local store."""
        page = f"#/experiments/{self.experiment_id}/runs/{run_id}"
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/{page}"
        return f"mlflow ui --backend-store-uri {self.uri}  # then open http://127.0.0.1:5000/{page}"


def resolve_tracking_uri(uri: str | None, root: Path = PROJECT_ROOT) -> str:
    """The project default (SQLite under <root>/mlruns) or `uri` with relative SQLite paths
    taken from the project root, so Hydra's run folder or the shell's cwd never matter."""
    if not uri:
        return f"{_SQLITE}{root / 'mlruns' / 'mlflow.db'}"
    if uri.startswith(_SQLITE) and not uri.startswith(_SQLITE + "/"):
        return f"{_SQLITE}{(root / uri[len(_SQLITE) :]).resolve()}"
    if "://" not in uri and not uri.startswith("file:"):
        raise ValueError(
            f"tracking.uri={uri!r} has no scheme: use null (SQLite under mlruns/), "
            "sqlite:///path/to/mlflow.db, or an MLflow server such as http://host:5000"
        )
    return uri


def default_artifact_location(uri: str) -> str | None:
    """For a SQLite store, artifacts go beside the database; a server chooses its own."""
    if uri.startswith(_SQLITE):
        return (Path(uri[len(_SQLITE) :]).parent / "artifacts").as_uri()
    return None


def connect(uri: str | None, experiment: str, artifact_location: str | None = None) -> Store:
    """Point MLflow at the store and make sure the experiment exists (safe under concurrency)."""
    resolved = resolve_tracking_uri(uri)
    if resolved.startswith(_SQLITE):
        Path(resolved[len(_SQLITE) :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(resolved)
    client = MlflowClient(resolved)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        location = artifact_location or default_artifact_location(resolved)
        try:
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another job made it first
                raise
            experiment_id = client.get_experiment_by_name(experiment).experiment_id
    elif found.lifecycle_stage == "deleted":
        raise ValueError(
            f"MLflow experiment {experiment!r} is deleted in {resolved}: restore it "
            f"(mlflow experiments restore --experiment-id {found.experiment_id}) "
            "or choose another tracking.experiment"
        )
    else:
        experiment_id = found.experiment_id
    return Store(resolved, experiment_id, experiment)


@contextlib.contextmanager
def tracked_run(
    store: Store,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that always ends: FINISHED, FAILED on an exception (with the traceback
    as an artifact), KILLED on Ctrl-C or SIGTERM. Never left RUNNING."""
    active = mlflow.start_run(
        experiment_id=store.experiment_id,
        run_name=run_name,
        parent_run_id=parent_run_id,
        tags={**git_tags(), **(tags or {})},
    )
    try:
        with _signals_raise_interrupt():
            yield active
            raise_if_stop_requested()
    except KeyboardInterrupt:
        _end_with_error(active.info.run_id, "KILLED", "interrupted (Ctrl-C or SIGTERM)")
        raise
    except BaseException as exc:
        _end_with_error(active.info.run_id, "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    mlflow.end_run("FINISHED")


def _end_with_error(run_id: str, status: str, message: str) -> None:
    try:
        client = MlflowClient()
        client.set_tag(run_id, "error", message[:5000])
        client.log_text(run_id, traceback.format_exc(), "error.txt")
    finally:
        mlflow.end_run(status)


_stop_requested: list[int] = []  # the signals received while a run was tracked


def raise_interrupt(signum: int, frame: object) -> None:
    """The Ctrl-C and SIGTERM handler: a scheduler stopping the job counts as Ctrl-C, so the
    runs it leaves are marked KILLED. The request is also recorded, for
    `raise_if_stop_requested`."""
    _stop_requested.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def raise_if_stop_requested() -> None:
    """Raise again a Ctrl-C or SIGTERM that Python swallowed: when the signal arrives while a
    finaliser runs (SQLAlchemy and TensorFlow run some during garbage collection), Python
    prints the KeyboardInterrupt as "Exception ignored" and goes on, and training would too."""
    if _stop_requested:
        raise KeyboardInterrupt(f"signal {_stop_requested[-1]}")


@contextlib.contextmanager
def _signals_raise_interrupt() -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM go to `raise_interrupt` (in the main thread;
    elsewhere, no change)."""
    _stop_requested.clear()
    stops = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = [signal.signal(s, raise_interrupt) for s in stops]
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for stop, handler in zip(stops, previous, strict=True):
            signal.signal(stop, handler)


def record_failed_job(
    settings: Mapping[str, Any],
    parent_run_id: str,
    overrides: Sequence[str],
    message: str,
    run_name: str | None = None,
) -> None:
    """A sweep job that could not start (its config is invalid) as a FAILED child run, so that
    the sweep's report lists it beside the others."""
    store = connect(settings["uri"], settings["experiment"], settings.get("artifact_location"))
    client = MlflowClient(store.uri)
    run = client.create_run(
        store.experiment_id,
        run_name=run_name or " ".join(overrides) or "invalid config",
        tags={"mlflow.parentRunId": parent_run_id, "error": message[:5000]},
    )
    given = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in given.items()])
    client.set_terminated(run.info.run_id, "FAILED")


def git_tags(root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The commit the code came from, and whether the working tree differed from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git.dirty": str(dirty).lower()}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'early_stopping': {'patience': 3}}} -> {'train.early_stopping.patience': 3}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_config(config: Mapping[str, Any], overrides: Sequence[str] = ()) -> None:
    """Every config value as a dotted param, plus the resolved YAML and the overrides."""
    import yaml

    mlflow.log_params({k: _param_value(v) for k, v in flatten(config).items()})
    mlflow.log_text(yaml.safe_dump(dict(config), sort_keys=False), "config/config.yaml")
    mlflow.log_text(yaml.safe_dump(list(overrides)), "config/overrides.yaml")


def _param_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def log_dataset(dataset: Dataset) -> dict[str, str]:
    """Record the data's identity: a SHA-256 over every pixel and label of each split.

    MLflow's own dataset digest hashes only the first 10,000 values; ours is the full
    content (its first 32 hex digits fill MLflow's 36-character digest field). The data card
    (counts, pixel statistics, skipped files, removed duplicates, sample images) goes to data/.
    """
    from pipeline.data.card import data_card

    digests = dataset.digests()
    tags = {
        "data.digest": dataset.digest(),
        "data.source": dataset.source[:5000],
        "data.format": dataset.format,
        **{f"data.digest.{name}": d for name, d in digests.items()},
    }
    if dataset.report.source_digest:
        tags["data.source_digest"] = dataset.report.source_digest
    mlflow.set_tags(tags)
    for name, split in dataset.splits():
        log_input(
            mlflow.data.from_numpy(
                split.images,
                targets=split.labels,
                name=f"{dataset.format}-{name}",
                digest=digests[name][:32],
            ),
            context=name,
        )
    card = data_card(dataset)
    mlflow.log_text(card.markdown(), "data/card.md")
    mlflow.log_dict(card.summary, "data/summary.json")
    log_table(card.class_counts, "data/class_counts.csv")
    log_table(card.pixel_stats, "data/pixel_stats.csv")
    log_table(card.skipped, "data/skipped_files.csv")
    mlflow.log_figure(card.samples, "data/samples.png")
    return tags


def log_input(dataset: mlflow.data.Dataset, context: str, attempts: int = 3) -> None:
    """`mlflow.log_input` for the active run, safe when concurrent runs in one experiment log
    the same dataset: MLflow's store looks the dataset up and inserts it without a lock, so
    all but one of the runs that race there get a unique-key violation (400 from a server)
    although nothing is wrong. Trying again finds the dataset the winner inserted."""
    for attempt in range(1, attempts + 1):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException as exc:
            text = str(exc).lower()
            if attempt == attempts or not ("unique" in text or "duplicate" in text):
                raise
            log.info("Dataset %s logged by a concurrent run first; linking it", dataset.name)


def log_table(table: pd.DataFrame, artifact_file: str) -> None:
    mlflow.log_text(table.to_csv(), artifact_file)


def log_outcome(
    model: Any, result: TrainResult, evaluation: Evaluation, dataset: Dataset
) -> dict[str, float]:
    """Final metrics (test, best epoch, model size), the history, the per-class report and the
    figures; returns the metrics."""
    from pipeline import plots
    from pipeline.model import flops_per_example

    forward_flops, train_flops = flops_per_example(model)
    metrics = {
        **evaluation.metrics("test_"),
        "test_macro_f1": float(evaluation.per_class["f1-score"].mean()),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "best_val_loss": float(result.best["val_loss"]),
        "best_val_accuracy": float(result.best["val_accuracy"]),
        # train accuracy as Keras reports it (mean over the epoch's batches, dropout on)
        "train_valid_gap": float(result.best["accuracy"] - result.best["val_accuracy"]),
        "param_count": model.count_params(),
        "flops_forward_per_example": forward_flops,
        "flops_train_step_per_example": train_flops,
    }
    mlflow.log_metrics(metrics)
    mlflow.set_tag("stopped_early", str(result.stopped_early).lower())
    log_table(result.history, "training/history.csv")
    log_table(evaluation.per_class, "evaluation/per_class.csv")
    figures = {
        "learning_curves": plots.learning_curves_figure(result.history, result.best_epoch),
        "confusion_matrix": plots.confusion_matrix_figure(evaluation.confusion, dataset.classes),
        "misclassified": plots.misclassified_figure(
            dataset.test.images, dataset.test.labels, evaluation.predictions, dataset.classes
        ),
    }
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"figures/{name}.png")
    return metrics


def pinned_requirements() -> list[str]:
    """The installed Keras/TensorFlow versions, given explicitly so that `log_model` does not
    spend seconds inferring requirements in a subprocess."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("keras", "tensorflow", "tensorflow-cpu"):
        with contextlib.suppress(PackageNotFoundError):
            pins.append(f"{dist}=={version(dist)}")
    return pins


def log_keras_model(model: Any, input_example: Any, name: str = "model") -> str:
    """Log the model with a signature (raw uint8 images in, class probabilities out) and an
    input example; returns its `models:/` URI for `mlflow.pyfunc.load_model`."""
    import keras
    import mlflow.tensorflow
    from mlflow.models import infer_signature

    # The same layers and weights, without the training set-up (optimizer state, compile
    # options such as steps_per_execution): what a user loading the model needs, no more.
    model = keras.Model(model.inputs, model.outputs, name=model.name)
    signature = infer_signature(input_example, model.predict(input_example, verbose=0))
    # mlflow.tensorflow saves Keras 3 models in the native .keras format; mlflow.keras cannot
    # log an input example (it writes the example before creating the folder: mlflow#16183).
    info = mlflow.tensorflow.log_model(
        model,
        name=name,
        signature=signature,
        input_example=input_example,
        pip_requirements=pinned_requirements(),
    )
    return info.model_uri
