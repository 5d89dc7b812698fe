"""Whether a change changed a run: dump a store's one run, then compare two dumps.

    # the code before (a checkout of main) and after, each into the same store path
    cd <checkout> && MLFLOW_TRACKING_URI=sqlite:////tmp/same/store/mlflow.db \\
        PIPELINE_CACHE_DIR=/tmp/same/cache <venv>/bin/python -m pipeline train.epochs=2 \\
        hydra.run.dir=/tmp/same/out
    .venv/bin/python bench/same_run.py dump sqlite:////tmp/same/store/mlflow.db before.json
    # (remove /tmp/same, run the other checkout the same way, dump it as after.json)
    .venv/bin/python bench/same_run.py compare before.json after.json

A dump holds the run's params, final metrics, every metric's history, tags, the recorded
tables (config, history, per-class scores, data card) and the model's weights (beside it,
as .npz). The comparison leaves out what differs between any two runs (wall times, host,
pid, commit, the program's path) and exits 1 when anything else differs. The same store
path both times keeps `tracking.uri`, a param, the same.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

TABLES = (
    "config/config.yaml",
    "config/overrides.yaml",
    "training/history.csv",
    "evaluation/per_class.csv",
    "data/summary.json",
    "data/class_counts.csv",
    "data/pixel_stats.csv",
    "data/card.md",
    "data/skipped_files.csv",
)
# tags that differ between any two runs, whatever the code
VOLATILE = {
    "host",
    "pid",
    "pid.started",
    "checkpoint",
    "mlflow.runName",
    "mlflow.source.git.commit",
    "mlflow.source.git.branch",
    "mlflow.source.name",
    "git.dirty",
    "mlflow.log-model.history",
}


def timing(key: str) -> bool:
    return key.startswith("seconds.") or key == "epoch_seconds"


def dump(uri: str, out: Path) -> None:
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    [run] = client.search_runs(experiments)
    run_id = run.info.run_id
    history = {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        for key in run.data.metrics
    }
    tables = {p: Path(client.download_artifacts(run_id, p)).read_text() for p in TABLES}
    record = {
        "status": run.info.status,
        "params": run.data.params,
        "metrics": run.data.metrics,
        "tags": run.data.tags,
        "history": {k: sorted(v) for k, v in history.items()},
        "tables": tables,
    }
    [model] = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    [file] = Path(mlflow.artifacts.download_artifacts(model.artifact_location)).rglob("*.keras")
    np.savez(out.with_suffix(".npz"), *keras.models.load_model(file).get_weights())
    out.write_text(json.dumps(record))
    print(f"run {run_id} ({run.info.status}) dumped to {out}")


def _same(name: str, a: dict[str, Any], b: dict[str, Any]) -> bool:
    differs = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    print(f"{name}: {len(a)} and {len(b)}, identical: {not differs}")
    for key in differs:
        print(f"    {key}: {a.get(key)!r:.80} != {b.get(key)!r:.80}")
    return not differs


def _history_rows(text: str) -> list[dict[str, str]]:
    rows = csv.DictReader(io.StringIO(text))
    return [{k: v for k, v in row.items() if not timing(k)} for row in rows]


def compare(first: Path, second: Path) -> bool:
    import numpy as np

    a, b = (json.loads(p.read_text()) for p in (first, second))
    same = [
        _same("status", {"status": a["status"]}, {"status": b["status"]}),
        _same("params", a["params"], b["params"]),
        _same(
            "final metrics (seconds.* left out)",
            {k: v for k, v in a["metrics"].items() if not timing(k)},
            {k: v for k, v in b["metrics"].items() if not timing(k)},
        ),
    ]
    ha = {k: v for k, v in a["history"].items() if not timing(k)}
    hb = {k: v for k, v in b["history"].items() if not timing(k)}
    points = sum(len(v) for v in ha.values())
    same.append(_same(f"metric histories ({points} points)", ha, hb))
    same.append(
        _same(
            "tags (host, pid, commit, program path left out)",
            {k: v for k, v in a["tags"].items() if k not in VOLATILE},
            {k: v for k, v in b["tags"].items() if k not in VOLATILE},
        )
    )
    for path, text in a["tables"].items():
        other = b["tables"].get(path, "")
        if path == "training/history.csv":
            equal = _history_rows(text) == _history_rows(other)
            print(f"{path} (epoch_seconds left out): identical: {equal}")
        else:
            equal = text == other
            print(f"{path}: byte-identical: {equal} ({len(text)} bytes)")
        same.append(equal)
    wa, wb = (np.load(p.with_suffix(".npz")) for p in (first, second))
    weights = wa.files == wb.files and all(np.array_equal(wa[k], wb[k]) for k in wa.files)
    size = sum(wa[k].size for k in wa.files)
    print(f"model weights: {len(wa.files)} arrays, {size:,} numbers, identical: {weights}")
    same.append(weights)
    return all(same)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "dump":
        dump(sys.argv[2], Path(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(0 if compare(Path(sys.argv[2]), Path(sys.argv[3])) else 1)
    else:
        sys.exit("usage: same_run.py dump <tracking uri> <out.json> | compare <a.json> <b.json>")


if __name__ == "__main__":
    main()
