"""Rerun a past run from what it logged, and say metric by metric whether the result is the
same: the "reproducible runs" promise made checkable.

The run's resolved config (`config/config.yaml`) is validated as it was logged, trained again
on the same data source (its `data.digest` must match before training starts), into the same
store and experiment, tagged `reproduces=<run id>`. Timings are not compared. The logged config
is a record, not an instruction (`pipeline.config.logged`): a pickle or a download it asks for
needs the person's own override.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.config import AppConfig, TrackingConfig
from pipeline.config.logged import from_record, logged_overrides, read_record
from pipeline.jobs.then_and_now import Code
from pipeline.names import Artifact, Kind, Metric, Tag
from pipeline.precision import metric_value

_TIMINGS = (Metric.SECONDS_PREFIX, Metric.EPOCH_SECONDS)
_WHERE = ("tracking.", "data.cache_dir")  # where a run is recorded and caches: not compared


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
    causes: tuple[str, ...] = ()  # what the rerun itself found different (data, config)

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


def logged_config(
    client: MlflowClient, run_id: str, tracking: TrackingConfig, given: Mapping[str, Any]
) -> tuple[AppConfig, list[str]]:
    """The run's resolved config as this process may act on it (`from_record`: the person's
    `given` data settings and `tracking` section in, opt-ins from the record refused), and
    its logged command-line overrides."""
    config_file = Path(client.download_artifacts(run_id, Artifact.CONFIG))
    overrides_file = Path(client.download_artifacts(run_id, Artifact.OVERRIDES))
    raw = read_record(config_file, f"run {run_id}'s {Artifact.CONFIG}")
    cfg = from_record(raw, run_id, given, tracking)
    overrides = logged_overrides(read_record(overrides_file, Artifact.OVERRIDES), run_id)
    return cfg, overrides


def comparable(metrics: dict[str, float]) -> dict[str, float]:
    """The results of a run, without its wall times (which no rerun repeats), at the
    precision they have (a run logged before metrics were rounded compares the same)."""
    return {k: metric_value(v) for k, v in metrics.items() if not k.startswith(_TIMINGS)}


def reproduce(
    run_id: str,
    tracking: TrackingConfig,
    given: Mapping[str, Any] | None = None,
    started: float | None = None,
) -> Reproduction:
    """Train `run_id`'s config again in the store `tracking` names, into the run's own
    experiment; compare the metrics. `given` are the person's own data settings (where the
    data is now, an opt-in the record asks for)."""
    from pipeline.jobs.training import run

    client = MlflowClient(tracking.uri)
    original = client.get_run(run_id)
    tracking = tracking.model_copy(
        update={
            "experiment": client.get_experiment(original.info.experiment_id).name,
            "run_name": f"reproduce {str(original.info.run_name or run_id)[:200]}",
        }
    )
    cfg, overrides = logged_config(client, run_id, tracking, given or {})
    run(
        cfg,
        overrides,
        started=started,
        tags={Tag.REPRODUCES: run_id, Tag.KIND: Kind.REPRODUCTION},
        expected_data_digest=original.data.tags.get(Tag.DATA_DIGEST),
    )
    return compared(client, original, _last_run_id())


def reproduce_at_commit(
    run_id: str,
    tracking: TrackingConfig,
    code: Code,
    given: Mapping[str, Any] | None = None,
    patch: str | None = None,
) -> Reproduction:
    """Train `run_id`'s config again with its own `code` (`pipeline.jobs.at_commit`), into
    its experiment; compare the metrics, and what the rerun logged of its config and data."""
    from pipeline.jobs import at_commit

    client = MlflowClient(tracking.uri)
    original = client.get_run(run_id)
    tracking = tracking.model_copy(
        update={
            "experiment": client.get_experiment(original.info.experiment_id).name,
            "run_name": f"reproduce {str(original.info.run_name or run_id)[:200]} "
            f"at {str(code.commit)[:12]}",
        }
    )
    new = at_commit.rerun(client, original, code, tracking, given or {}, patch=patch)
    client.set_tag(new, Tag.KIND, Kind.REPRODUCTION)  # the old code may name it otherwise
    return compared(client, original, new)


def compared(client: MlflowClient, original: Run, new_id: str) -> Reproduction:
    """The original's metrics against the rerun's, and what the rerun says of a difference:
    other data (its `data.digest`) or another config (the logged configs, where the
    store is not compared)."""
    new = client.get_run(new_id)
    before = comparable(original.data.metrics)
    after = comparable(new.data.metrics)
    rows = [Row(k, before.get(k), after.get(k)) for k in sorted(before.keys() | after.keys())]
    causes = []
    digests = [run.data.tags.get(Tag.DATA_DIGEST) for run in (original, new)]
    if digests[0] != digests[1]:
        was, is_ = (str(d)[:16] for d in digests)
        causes.append(f"the data differs: {Tag.DATA_DIGEST} {was}... then, {is_}... now")
    if changed := config_changes(client, original.info.run_id, new_id):
        causes.append(f"the config differs: {', '.join(changed[:6])}")
    return Reproduction(original.info.run_id, new_id, rows, tuple(causes))


def config_changes(client: MlflowClient, a: str, b: str) -> list[str]:
    """The settings whose logged values differ between runs `a` and `b` (where they run and
    where the cache is aside): `key: old → new`."""
    flat = []
    for run_id in (a, b):
        try:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(client.download_artifacts(run_id, Artifact.CONFIG, folder))
                raw = read_record(path, f"run {run_id}'s {Artifact.CONFIG}")
        except (MlflowException, OSError):
            return []  # a run without its config (the original failed early): not compared
        flat.append(_flatten(raw, ""))
    keys = sorted(k for k in flat[0].keys() | flat[1].keys() if not k.startswith(_WHERE))
    missing = "(absent)"
    return [
        f"{k}: {flat[0].get(k, missing)} → {flat[1].get(k, missing)}"[:200]
        for k in keys
        if flat[0].get(k, missing) != flat[1].get(k, missing)
    ]


def _flatten(value: object, key: str) -> dict[str, object]:
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for k, v in value.items():
            out |= _flatten(v, f"{key}.{k}" if key else str(k))
        return out
    return {key: value}


def _last_run_id() -> str:
    from pipeline.tracking.recording import recorder

    return str(recorder.last_run_id())
