"""Where runs are recorded, importable without MLflow (the trainer never imports it): the
store's URI resolved from the project home, the resolved `Store`, a run's checkpoint folder,
and the one-line `TrackingError` every entry point prints."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pipeline import errors
from pipeline.config import project_home
from pipeline.tracking.store.views import VIEW_KEY

TrackingError = errors.TrackingError  # where tracking's callers have always found it


@dataclass(frozen=True)
class Store:
    """A resolved tracking store and the experiment runs go to."""

    uri: str
    experiment_id: str
    experiment: str

    def ui_hint(self, run_id: str | None = None) -> str:
        """How to look at a run, or with no run at the experiment's saved comparison view
        (`pipeline.tracking.store.views`): the server page, or the `mlflow ui` command for a local
        store. `workflowType=machine_learning`: MLflow 3.17's UI otherwise shows the GenAI
        pages (its GenAI / Model training switch overrides the experiment's kind)."""
        page = f"#/experiments/{self.experiment_id}/runs"
        page += f"/{run_id}?" if run_id else f"?viewStateShareKey={VIEW_KEY}&"
        page += "workflowType=machine_learning"
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/{page}"
        return f"mlflow ui --backend-store-uri {self.uri}  # then open http://127.0.0.1:5000/{page}"


SQLITE = "sqlite:///"


# a checkpoint's key is a name the trainer made (uuid4().hex; runs from before the `checkpoint`
# tag: their run id): 32 hex digits, never a path
_KEY = re.compile(r"[0-9a-f]{32}")


def checkpoint_dir(uri: str, key: str) -> Path:
    """Where a run keeps its training checkpoint until it ends: beside a SQLite store, else
    under the project home's `mlruns/checkpoints` (the machine that trains), in the folder
    its `checkpoint` tag names (runs from before that tag: their run id).

    The key comes back from the run's tags, which anyone with write access to the run can
    change, and a finished run deletes its folder: a key that is not a name this pipeline
    makes, or a folder that resolves outside the checkpoints folder, is refused (ValueError).
    """
    root = Path(uri[len(SQLITE) :]).parent if uri.startswith(SQLITE) else project_home() / "mlruns"
    folder = root / "checkpoints"
    if not _KEY.fullmatch(key):
        raise ValueError(f"checkpoint key {key[:100]!r} is not a name this pipeline makes")
    chosen = folder / key
    if chosen.resolve().parent != folder.resolve():  # a link planted in its place
        raise ValueError(f"checkpoint folder {chosen} leads out of {folder}")
    return chosen


def resolve_tracking_uri(uri: str | None, root: Path | None = None) -> str:
    """The default store (SQLite under <home>/mlruns) or `uri` with relative SQLite paths taken
    from the project home (`pipeline.config.project_home`), so Hydra's run folder never
    matters."""
    root = root or project_home()
    if not uri:
        return f"{SQLITE}{root / 'mlruns' / 'mlflow.db'}"
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        return f"{SQLITE}{(root / uri[len(SQLITE) :]).resolve()}"
    if "://" not in uri and not uri.startswith("file:"):
        raise ValueError(
            f"tracking.uri={uri!r} has no scheme: use null (SQLite under mlruns/), "
            "sqlite:///path/to/mlflow.db, or an MLflow server such as http://host:5000"
        )
    return uri


def store_uri(given: str | None) -> str:
    """The store a command uses: the setting, else $MLFLOW_TRACKING_URI, else the project's
    (`resolve_tracking_uri`); a URI with no scheme is a TrackingError."""
    import os

    try:
        return resolve_tracking_uri(given or os.environ.get("MLFLOW_TRACKING_URI"))
    except ValueError as exc:
        raise TrackingError(str(exc)) from None
