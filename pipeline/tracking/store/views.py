"""How an experiment opens in MLflow's UI: as a model-training experiment, with a saved view of
its runs table that already compares (key metrics as columns, best first, and a parallel
coordinates chart of the regularisers against valid accuracy).

MLflow 3.17's UI reads both from experiment tags: `mlflow.experimentKind` picks the page an
experiment opens on (without it, the GenAI overview and a popup), and a
`mlflow.sharedViewState.<key>` tag holds a runs-page view, opened by the URL parameter
`viewStateShareKey=<key>` (what the UI's "Share" button makes). No tag or setting changes the
view of the plain runs page, so the pipeline prints the link with the key. In 3.17 the UI's
GenAI / Model training switch (remembered per browser, GenAI at first) overrides the kind
tag, so the printed links also say `workflowType=machine_learning`.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.names import ExperimentTag, Kind, Metric, Tag

VIEW_KEY = "compare"
AUDIT_VIEW_KEY = "audit"  # retraining's audit runs: action, decision, the champion's move
# the settings that the lesson's experiments vary, and the results that compare runs fairly
KEY_PARAMS = ("model.l2_beta", "model.dropout_rate", "model.hidden_units", "train.learning_rate")
KEY_METRICS = (
    Metric.BEST_VAL_ACCURACY,
    Metric.BEST_VAL_DATA_LOSS,
    Metric.TEST_ACCURACY,
    Metric.TRAIN_VALID_GAP,
)
_SECTION = "notmnist-comparison"


def _column(kind: str, key: str) -> str:
    """A runs-table column id as the UI writes it: metrics.`best_val_accuracy`."""
    return f"{kind}.`{key}`"


def comparable_filter() -> str:
    """Runs trained as configured (`Kind.COMPARABLE`), finished: a search filter as MLflow
    reads it. Its search has no IN or OR for tags, so it names the kinds left out; `!=`
    also leaves out a run without a `kind` tag (one recorded before there was one)."""
    others = [k for k in Kind.ALL if k not in Kind.COMPARABLE]
    kinds = [f"{_column('tags', Tag.KIND)} != '{kind}'" for kind in others]
    return " and ".join([*kinds, "attributes.status = 'FINISHED'"])


def comparison_view() -> dict[str, Any]:
    """The saved runs-page view: search facets and UI state, as the UI serialises them."""
    chart = {"metricSectionId": _SECTION, "deleted": False, "isGenerated": False}
    charts = [
        {
            **chart,
            "uuid": "notmnist-parallel",
            "type": "PARALLEL",
            "runsCountToCompare": 100,
            "displayName": "Regularisation against valid accuracy",
            "selectedParams": ["model.l2_beta", "model.dropout_rate"],
            "selectedMetrics": [Metric.BEST_VAL_ACCURACY],
            "showAllRuns": False,
        },
        {
            **chart,
            "uuid": "notmnist-bar",
            "type": "BAR",
            "runsCountToCompare": 100,
            "metricKey": Metric.BEST_VAL_ACCURACY,
        },
        {
            **chart,
            "uuid": "notmnist-curves",
            "type": "LINE",
            "runsCountToCompare": 100,
            "metricKey": Metric.VAL_ACCURACY,
            "selectedMetricKeys": [Metric.VAL_ACCURACY],
            "xAxisKey": "step",
            "scaleType": "linear",
            "lineSmoothness": 0,
        },
    ]
    return {
        # finished training runs and sweep jobs only: a sweep's parent (the best run's
        # metrics) would stand beside its own children, a trial on other data or a
        # reproduction beside what it repeats
        "searchFilter": comparable_filter(),
        "orderByKey": _column("metrics", Metric.BEST_VAL_ACCURACY),
        "orderByAsc": False,
        "selectedColumns": [
            *(_column("metrics", m) for m in KEY_METRICS),
            *(_column("params", p) for p in KEY_PARAMS),
        ],
        "compareRunCharts": charts,
        "compareRunSections": [
            {
                "uuid": _SECTION,
                "name": "Comparison",
                "display": True,
                "isReordered": False,
                "deleted": False,
                "isGenerated": False,
            }
        ],
        "isAccordionReordered": True,
    }


AUDIT_TAGS = (
    Tag.RETRAIN_ACTION,
    Tag.DECISION,
    Tag.CHAMPION_BEFORE,
    Tag.CHAMPION_AFTER,
    Tag.CHALLENGER_VERSION,
    Tag.MODEL_NAME,
)
AUDIT_METRICS = (f"challenger.{Metric.HOLDOUT_ACCURACY}", f"champion.{Metric.HOLDOUT_ACCURACY}")


def audit_view() -> dict[str, Any]:
    """Retraining's audit runs, newest first, with what each did as columns: the action, the
    decision, the champion before and after, the challenger, both holdout accuracies."""
    return {
        "searchFilter": f"{_column('tags', Tag.KIND)} = '{Kind.AUDIT}'",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "selectedColumns": [
            *(_column("tags", t) for t in AUDIT_TAGS),
            *(_column("metrics", m) for m in AUDIT_METRICS),
        ],
    }


def experiment_tags() -> dict[str, str]:
    """The experiment tags that make the UI open on the comparison (see the module's doc)."""
    views = {VIEW_KEY: comparison_view(), AUDIT_VIEW_KEY: audit_view()}
    return {
        ExperimentTag.KIND: ExperimentTag.KIND_MODEL_TRAINING,
        **{
            f"{ExperimentTag.SHARED_VIEW_PREFIX}{key}": json.dumps(view, separators=(",", ":"))
            for key, view in views.items()
        },
    }
