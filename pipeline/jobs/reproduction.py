"""Rerun a past run from what it logged, and say metric by metric whether the result is the
same: the "reproducible runs" promise made checkable.

The run's resolved config (`config/config.yaml`) is validated as it was logged, trained again
on the same data source (its `data.digest` must match before training starts), into the same
store and experiment, tagged `reproduces=<run id>`. Timings are not compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from pipeline.config import AppConfig, validate
from pipeline.names import Artifact, Metric, Tag

_TIMINGS = (Metric.SECONDS_PREFIX, Metric.EPOCH_SECONDS)


@dataclass(frozen=True)
class Row:
    metric: str
    original: float | None
    reproduced: float | None

    @property
    def identical(self) -> bool:
        return self.original == self.reproduced or (
            self.original is not None
            and self.reproduced is not None
            and math.isnan(self.original)
            and math.isnan(self.reproduced)
        )

    @property
    def verdict(self) -> str:
        if self.identical:
            return "identical"
        if self.original is None or self.reproduced is None:
            return "missing in the " + ("original" if self.original is None else "reproduction")
        return f"differs by {self.reproduced - self.original:+.3g}"


@dataclass(frozen=True)
class Reproduction:
    original_run_id: str
    run_id: str
    rows: list[Row]

    @property
    def identical(self) -> bool:
        return all(row.identical for row in self.rows)

    def table(self) -> str:
        """A plain-text table: metric, original, reproduced, verdict."""
        cells = [("metric", "original", "reproduced", "")]
        cells += [
            (r.metric, _number(r.original), _number(r.reproduced), r.verdict) for r in self.rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(4)]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in cells
        )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.10g}"


def logged_config(client: MlflowClient, run_id: str) -> tuple[AppConfig, list[str]]:
    """The run's resolved config, validated as it was logged, and its command-line overrides."""
    config_file = Path(client.download_artifacts(run_id, Artifact.CONFIG))
    overrides_file = Path(client.download_artifacts(run_id, Artifact.OVERRIDES))
    cfg = validate(yaml.safe_load(config_file.read_text()))
    overrides = [str(o) for o in yaml.safe_load(overrides_file.read_text()) or []]
    return cfg, overrides


def comparable(metrics: dict[str, float]) -> dict[str, float]:
    """The results of a run, without its wall times (which no rerun repeats)."""
    return {k: v for k, v in metrics.items() if not k.startswith(_TIMINGS)}


def reproduce(run_id: str, tracking_uri: str, started: float | None = None) -> Reproduction:
    """Train `run_id`'s config again in the store at `tracking_uri`; compare the metrics."""
    from pipeline.jobs.training import run

    client = MlflowClient(tracking_uri)
    original = client.get_run(run_id)
    cfg, overrides = logged_config(client, run_id)
    tracking = cfg.tracking.model_copy(
        update={
            "uri": tracking_uri,
            "experiment": client.get_experiment(original.info.experiment_id).name,
            "run_name": f"reproduce {original.info.run_name or run_id}",
        }
    )
    cfg = cfg.model_copy(update={"tracking": tracking})
    run(
        cfg,
        overrides,
        started=started,
        tags={Tag.REPRODUCES: run_id},
        expected_data_digest=original.data.tags.get(Tag.DATA_DIGEST),
    )
    new = _last_run_id()
    before = comparable(original.data.metrics)
    after = comparable(client.get_run(new).data.metrics)
    rows = [Row(k, before.get(k), after.get(k)) for k in sorted(before.keys() | after.keys())]
    return Reproduction(run_id, new, rows)


def _last_run_id() -> str:
    from pipeline.tracking import recorder

    return str(recorder.last_run_id())
