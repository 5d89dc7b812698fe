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

from pipeline.names import ExperimentTag, Metric

VIEW_KEY = "compare"
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
        # training runs only: a sweep's parent (no model params, the best run's metrics)
        # would stand beside its own children
        "searchFilter": "params.`model.name` != ''",
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


def experiment_tags() -> dict[str, str]:
    """The experiment tags that make the UI open on the comparison (see the module's doc)."""
    return {
        ExperimentTag.KIND: ExperimentTag.KIND_MODEL_TRAINING,
        f"{ExperimentTag.SHARED_VIEW_PREFIX}{VIEW_KEY}": json.dumps(
            comparison_view(), separators=(",", ":")
        ),
    }
