"""Where runs are recorded: the tracking store and the experiment, resolved once per run.

Nothing in `pipeline.tracking` imports TensorFlow, so the sweep callback and the report can
use it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config import project_home
from pipeline.names import ExperimentTag
from pipeline.tracking.views import VIEW_KEY, experiment_tags

_SQLITE = "sqlite:///"


@dataclass(frozen=True)
class Store:
    """A resolved tracking store and the experiment runs go to."""

    uri: str
    experiment_id: str
    experiment: str

    def ui_hint(self, run_id: str | None = None) -> str:
        """How to look at a run, or with no run at the experiment's saved comparison view
        (`pipeline.tracking.views`): the server page, or the `mlflow ui` command for a local
        store. `workflowType=machine_learning`: MLflow 3.17's UI otherwise shows the GenAI
        pages (its GenAI / Model training switch overrides the experiment's kind)."""
        page = f"#/experiments/{self.experiment_id}/runs"
        page += f"/{run_id}?" if run_id else f"?viewStateShareKey={VIEW_KEY}&"
        page += "workflowType=machine_learning"
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/{page}"
        return f"mlflow ui --backend-store-uri {self.uri}  # then open http://127.0.0.1:5000/{page}"


def resolve_tracking_uri(uri: str | None, root: Path | None = None) -> str:
    """The default store (SQLite under <home>/mlruns) or `uri` with relative SQLite paths taken
    from the project home (`pipeline.config.project_home`), so Hydra's run folder never
    matters."""
    root = root or project_home()
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
    """Point MLflow at the store and make sure the experiment exists (safe under concurrency),
    tagged so that MLflow's UI opens it on the runs table (`pipeline.tracking.views`)."""
    resolved = resolve_tracking_uri(uri)
    if resolved.startswith(_SQLITE):
        Path(resolved[len(_SQLITE) :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(resolved)
    client = MlflowClient(resolved)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        location = artifact_location or default_artifact_location(resolved)
        try:
            experiment_id = client.create_experiment(
                experiment, artifact_location=location, tags=experiment_tags()
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another job made it first
                raise
            made = client.get_experiment_by_name(experiment)
            if made is None:
                raise
            experiment_id = made.experiment_id
    elif found.lifecycle_stage == "deleted":
        raise ValueError(
            f"MLflow experiment {experiment!r} is deleted in {resolved}: restore it "
            f"(mlflow experiments restore --experiment-id {found.experiment_id}) "
            "or choose another tracking.experiment"
        )
    else:
        experiment_id = found.experiment_id
        # made before the pipeline tagged its experiments, or by hand: tag it now (a kind that
        # someone chose in the UI stays; the saved view is the pipeline's own, kept current)
        for key, value in experiment_tags().items():
            chosen = key == ExperimentTag.KIND and key in found.tags
            if found.tags.get(key) != value and not chosen:
                client.set_experiment_tag(experiment_id, key, value)
    return Store(resolved, experiment_id, experiment)
