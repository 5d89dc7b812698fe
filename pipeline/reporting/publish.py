"""Publishing a comparison: a sweep's or a study's report, figures, best-run tags and metrics
logged onto its parent run, where the MLflow UI shows them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pipeline.names import Artifact, Metric, Tag

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from pipeline.reporting.comparison import Comparison


def log_comparison(
    client: MlflowClient, parent_run_id: str, comparison: Comparison, name: str
) -> None:
    """Attach the comparison to the sweep's parent run (`name`, its run name): artifacts,
    best-run tags and metrics."""
    import pandas as pd
    from mlflow.entities import Metric as MetricPoint
    from mlflow.entities import RunTag

    from pipeline.reporting.figures import comparison_figures
    from pipeline.reporting.render import data_uri, html, markdown, report_title

    title = report_title(name, comparison)
    folder = Artifact.COMPARISON_DIR
    client.log_text(parent_run_id, comparison.table.to_csv(index=False), f"{folder}/comparison.csv")
    images, inline = {}, {}
    for name, fig in comparison_figures(comparison).items():
        client.log_figure(parent_run_id, fig, f"{folder}/{name}.png")
        images[name] = f"{name}.png"
        inline[name] = data_uri(fig)
    client.log_text(parent_run_id, markdown(comparison, images, title), f"{folder}/report.md")
    # MLflow's UI shows report.md's relative image links as text; it renders HTML artifacts,
    # so the same report with its figures inline is what to open there
    client.log_text(parent_run_id, html(comparison, inline, title), Artifact.REPORT_HTML)
    tags = {
        Tag.SWEEP_RUNS: str(len(comparison.table)),
        Tag.SWEEP_FAILED: str(len(comparison.failures)),
    }
    metrics = {}
    best = comparison.best
    if best is not None:
        best_tags = {"run_id": best["run_id"], "run_name": str(best["run_name"])}
        best_tags |= {setting: str(best[setting]) for setting in comparison.varied}
        tags |= {f"{Tag.BEST_PREFIX}{k}": v for k, v in best_tags.items()}
        metrics = {
            m: float(best[m])
            for m in (
                Metric.BEST_VAL_ACCURACY,
                Metric.BEST_VAL_DATA_LOSS,
                Metric.BEST_VAL_LOSS,
                Metric.TEST_ACCURACY,
                Metric.TEST_DATA_LOSS,
                Metric.TEST_LOSS,
            )
            if m in best and pd.notna(best[m])
        }
    now = int(time.time() * 1000)
    client.log_batch(
        parent_run_id,
        metrics=[MetricPoint(k, v, now, 0) for k, v in metrics.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
