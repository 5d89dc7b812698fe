"""Compare runs, a sweep's children or all runs of an experiment: which settings varied, and
each run's results, best first.

`pipeline.reporting.render` turns a comparison into a report, `pipeline.reporting.figures`
draws it; the sweep callback logs both onto the sweep's parent run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from pipeline.names import Kind, Metric, Tag

RESULTS = (
    Metric.BEST_VAL_ACCURACY,
    Metric.BEST_VAL_DATA_LOSS,
    Metric.TEST_ACCURACY,
    Metric.TEST_DATA_LOSS,
    Metric.BEST_VAL_LOSS,
    Metric.TEST_LOSS,
    Metric.TRAIN_VALID_GAP,
    Metric.BEST_EPOCH,
    Metric.EPOCHS_RUN,
    Metric.PARAM_COUNT,
    Metric.SECONDS_TRAIN,
)
# Runs are ranked on quantities that mean the same whatever the run's L2 setting: valid
# accuracy at the kept epoch, ties broken by the penalty-free valid loss. Keras' `val_loss`
# includes the L2 penalty, so ranking by it would put every L2 run behind.
RANK_BY = (Metric.BEST_VAL_ACCURACY, Metric.BEST_VAL_DATA_LOSS)
RANK_WHY = (
    f"ranked by `{Metric.BEST_VAL_ACCURACY}` (valid accuracy at the kept epoch), ties by the "
    f"lower `{Metric.BEST_VAL_DATA_LOSS}` (valid cross-entropy without the L2 penalty): "
    f"`{Metric.VAL_LOSS}` includes the penalty, so it cannot compare runs with different "
    "L2 settings"
)
CURVES = (
    Metric.LOSS,
    Metric.ACCURACY,
    Metric.VAL_LOSS,
    Metric.VAL_ACCURACY,
    Metric.DATA_LOSS,
    Metric.VAL_DATA_LOSS,
)
_FAILED = ("FAILED", "KILLED")


@dataclass
class Comparison:
    """Runs side by side: `table` has one row per run, best first (`RANK_BY`)."""

    table: pd.DataFrame
    varied: list[str]
    sort_by: str
    failures: pd.DataFrame
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    # images in the valid and test splits, where every finished run had the same number:
    # one image is 1/size of that split's accuracy
    split_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def best(self) -> pd.Series | None:
        finished = self.table[self.table["status"] == "FINISHED"]
        return None if finished.empty else finished.iloc[0]

    def label(self, row: pd.Series) -> str:
        return ", ".join(f"{p}={row[p]}" for p in self.varied) or str(row["run_name"])


def find_runs(experiment_ids: Sequence[str], parent_run_id: str | None) -> pd.DataFrame:
    """Children of `parent_run_id`, or every comparable run of the experiments: no sweep
    parent, and of the kinds trained as configured (`Kind.COMPARABLE`; a run recorded before
    the `kind` tag counts too), so that a trial on other data, a retraining challenger or a
    reproduction does not stand beside them."""
    runs = mlflow.search_runs(
        experiment_ids=list(experiment_ids),
        filter_string=f"tags.`{Tag.PARENT_RUN_ID}` = '{parent_run_id}'" if parent_run_id else "",
        max_results=50_000,
    )
    if not parent_run_id and f"tags.{Tag.SWEEP}" in runs:
        runs = runs[runs[f"tags.{Tag.SWEEP}"] != "true"]
    if not parent_run_id and f"tags.{Tag.KIND}" in runs:
        kind = runs[f"tags.{Tag.KIND}"]
        runs = runs[kind.isna() | kind.isin(Kind.COMPARABLE)]
    return runs.reset_index(drop=True)


def compare(runs: pd.DataFrame, client: MlflowClient | None = None) -> Comparison:
    """The comparison of runs as `mlflow.search_runs` returns them (with learning curves when
    a client is given)."""
    # settings that differ between runs; where the runs are (tracking.*) is not a setting
    params = sorted(
        c for c in runs.columns if c.startswith("params.") and not c.startswith("params.tracking.")
    )
    varied = [c for c in params if runs[c].nunique() > 1]
    varied.sort(key=lambda c: -runs[c].nunique())  # most distinct values first
    table = pd.DataFrame(
        {
            "run_id": runs["run_id"],
            "run_name": runs.get(f"tags.{Tag.RUN_NAME}", runs["run_id"]),
            "status": runs["status"],
            **{c.removeprefix("params."): runs[c] for c in varied},
            **{m: runs.get(f"metrics.{m}", np.nan) for m in RESULTS},
        }
    )
    for count in (Metric.BEST_EPOCH, Metric.EPOCHS_RUN, Metric.PARAM_COUNT):
        table[count] = table[count].astype("Int64")
    table = table.sort_values(
        list(RANK_BY), ascending=[False, True], na_position="last", kind="stable"
    )
    failed = table["status"].isin(_FAILED)
    failures = table.loc[failed, ["run_id", "run_name", "status"]].copy()
    failures["error"] = [
        runs.set_index("run_id").get(f"tags.{Tag.ERROR}", pd.Series(dtype=object)).get(r, "")
        for r in failures["run_id"]
    ]
    comparison = Comparison(
        table.reset_index(drop=True),
        [c.removeprefix("params.") for c in varied],
        RANK_BY[0],
        failures.reset_index(drop=True),
    )
    if client is not None:
        finished = comparison.table.loc[~failed.to_numpy(), "run_id"]
        comparison.curves = {run_id: _history(client, run_id) for run_id in finished}
        comparison.split_sizes = _split_sizes(client, list(finished))
    return comparison


SPLITS = ("valid", "test")


def _split_sizes(client: MlflowClient, run_ids: Sequence[str]) -> dict[str, int]:
    """The valid and test splits' sizes shared by every run, from the datasets each logged
    (`mlflow.data.context` valid / test, their profile's `targets_size`); a split whose size
    differs between runs, or that a run did not log, is left out."""
    import json

    seen: dict[str, set[int]] = {split: set() for split in SPLITS}
    for run_id in run_ids:
        inputs = client.get_run(run_id).inputs
        sizes: dict[str, int] = {}
        for logged in inputs.dataset_inputs if inputs else []:
            context = {t.key: t.value for t in logged.tags}.get("mlflow.data.context")
            try:  # a record: anything that is not a positive count is no size
                size = json.loads(logged.dataset.profile or "{}").get("targets_size")
            except (ValueError, AttributeError):
                size = None
            if context in seen and type(size) is int and size > 0:
                sizes[str(context)] = size
        for split in SPLITS:
            seen[split].add(sizes.get(split, 0))
    return {s: next(iter(n)) for s, n in seen.items() if len(n) == 1 and 0 not in n}


def _history(client: MlflowClient, run_id: str) -> pd.DataFrame:
    columns = {}
    for metric in CURVES:
        points = client.get_metric_history(run_id, metric)
        columns[metric] = pd.Series({p.step: p.value for p in points}, dtype=float)
    return pd.DataFrame(columns).sort_index().rename_axis("epoch")
