"""The best trials again, over more seeds: the exported best is the trial that holds up.

Valid accuracy on a few hundred images moves in steps (one image of 687 is 0.15 point), and
a study's best trial is often a tie or a lucky seed. Before its export, the `rerun_top` best
trials (as the comparison ranks them) train again with `rerun_seeds` more `train.seed`
values each (`seed + 1`, `seed + 2`, ...: the split stays, initialisation, dropout and
shuffling change), and the trial with the best mean valid accuracy is exported. Each rerun is
a run nested under its trial's run (tags `search.rerun_of`, `search.seed`); a later report
finds the reruns already made and trains only those missing.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.config import AppConfig, validate, with_settings
from pipeline.names import Metric, Tag
from pipeline.stages.data import Dataset

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.jobs.search.study import Study

log = logging.getLogger(__name__)

SEED_LIMIT = 2**32  # seeds are 0 to 2^32 - 1


@dataclass(frozen=True)
class Reruns:
    """What a worker trains reruns with: its config, overrides, threads and decoded data.
    None where a report only reads (`search report` trains nothing)."""

    cfg: AppConfig
    overrides: Sequence[str]
    threads: int | None
    dataset: Dataset | None


@dataclass(frozen=True)
class Seeded:
    """One seed of one trial: its run and results."""

    seed: int
    run_id: str
    val_accuracy: float
    val_data_loss: float
    test_accuracy: float


@dataclass
class Standing:
    """One of the best trials over its seeds (its own run's first)."""

    trial: int
    run_id: str  # the trial's own run
    rank: int  # its place in the comparison, 1 = best
    seeds: list[Seeded]
    missing: list[int] = field(default_factory=list)  # seeds without a result

    @property
    def mean(self) -> float:
        return statistics.fmean(s.val_accuracy for s in self.seeds)

    @property
    def std(self) -> float:
        """Sample standard deviation of valid accuracy over the seeds (0 for one seed)."""
        return _std([s.val_accuracy for s in self.seeds])

    @property
    def mean_data_loss(self) -> float:
        return statistics.fmean(s.val_data_loss for s in self.seeds)

    @property
    def test_mean(self) -> float:
        return statistics.fmean(s.test_accuracy for s in self.seeds)

    @property
    def test_std(self) -> float:
        return _std([s.test_accuracy for s in self.seeds])


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def choose(standings: Sequence[Standing]) -> Standing:
    """The best mean valid accuracy; ties by the lower mean penalty-free valid loss, then by
    the comparison's rank."""
    return min(standings, key=lambda s: (-s.mean, s.mean_data_loss, s.rank))


def standings(study: Study, ranked: pd.DataFrame, reruns: Reruns | None) -> list[Standing]:
    """The first `search.rerun_top` trials of `ranked` (finished trial runs, best first, with
    `mlflow.search_runs` columns), each over its own seed and `search.rerun_seeds` more:
    found among earlier reruns, else trained now (unless `reruns` is None)."""
    from mlflow.tracking import MlflowClient

    from pipeline.jobs.search.export import trial_config

    client = MlflowClient(study.store.uri)
    top = ranked.head(study.search.rerun_top if study.search.rerun_seeds else 0)
    result = []
    for rank, (_, row) in enumerate(top.iterrows(), start=1):
        run_id, number = str(row["run_id"]), int(row[f"tags.{Tag.SEARCH_TRIAL}"])
        config = trial_config(client, run_id, study.tracking)
        own = int(config["train"]["seed"])
        standing = Standing(number, run_id, rank, [_seeded(own, run_id, row)])
        done = _earlier_reruns(study, run_id)
        for step in range(1, study.search.rerun_seeds + 1):
            seed = (own + step) % SEED_LIMIT
            found = done.get(seed)
            if found is None and reruns is not None:
                found = _rerun(study, reruns, config, number, run_id, seed)
            if found is None:
                standing.missing.append(seed)
            else:
                standing.seeds.append(found)
        result.append(standing)
    return result


def _seeded(seed: int, run_id: str, row: pd.Series) -> Seeded:
    return Seeded(
        seed,
        run_id,
        float(row[f"metrics.{Metric.BEST_VAL_ACCURACY}"]),
        float(row[f"metrics.{Metric.BEST_VAL_DATA_LOSS}"]),
        float(row[f"metrics.{Metric.TEST_ACCURACY}"]),
    )


def _earlier_reruns(study: Study, trial_run_id: str) -> dict[int, Seeded]:
    """The finished reruns nested under a trial's run, by seed (tags read as data: a run
    whose seed tag is not a seed is not one of them)."""
    import mlflow

    runs = mlflow.search_runs(
        [study.store.experiment_id],
        f"tags.`{Tag.PARENT_RUN_ID}` = '{trial_run_id}' and attributes.status = 'FINISHED'",
    )
    found: dict[int, Seeded] = {}
    needed = [f"metrics.{m}" for m in (Metric.BEST_VAL_ACCURACY, Metric.BEST_VAL_DATA_LOSS)]
    if runs.empty or not set(needed) <= set(runs.columns):
        return found
    for _, row in runs.iterrows():
        text = str(row.get(f"tags.{Tag.SEARCH_SEED}", ""))
        if text.isdecimal() and int(text) < SEED_LIMIT and row[needed].notna().all():
            found.setdefault(int(text), _seeded(int(text), str(row["run_id"]), row))
    return found


def _rerun(
    study: Study,
    reruns: Reruns,
    config: dict[str, object],
    number: int,
    trial_run_id: str,
    seed: int,
) -> Seeded | None:
    """Train the trial's config with another seed, as a run nested under the trial's run;
    None (logged) when it fails: the mean is then over the seeds that ran."""
    from pipeline.jobs import training
    from pipeline.tracking.recording import recorder

    settings = {"train.seed": seed, "tracking.run_name": f"trial {number} seed {seed}"}
    cfg = validate(with_settings(config, settings))
    tags = {
        Tag.SEARCH_STUDY: study.search.study,
        Tag.SEARCH_RERUN_OF: str(number),
        Tag.SEARCH_SEED: str(seed),
    }
    try:
        metrics = training.run(
            cfg,
            [*reruns.overrides, f"train.seed={seed}"],
            trial_run_id,
            threads=reruns.threads,
            dataset=reruns.dataset,
            tags=tags,
        )
    except Exception:
        log.exception("Trial %d with train.seed=%d failed; its mean leaves it out", number, seed)
        return None
    run_id = recorder.last_run_id() or ""
    log.info(
        "Trial %d with train.seed=%d: %s %.4f",
        number,
        seed,
        Metric.BEST_VAL_ACCURACY,
        metrics[Metric.BEST_VAL_ACCURACY],
    )
    return Seeded(
        seed,
        run_id,
        float(metrics[Metric.BEST_VAL_ACCURACY]),
        float(metrics[Metric.BEST_VAL_DATA_LOSS]),
        float(metrics[Metric.TEST_ACCURACY]),
    )


def table(found: Sequence[Standing], chosen: Standing | None) -> pd.DataFrame:
    """One row per seed of each trial: what `search/seeds.csv` holds."""
    import pandas as pd

    rows = [
        {
            "trial": s.trial,
            "rank": s.rank,
            "seed": seeded.seed,
            "run_id": seeded.run_id,
            Metric.BEST_VAL_ACCURACY: seeded.val_accuracy,
            Metric.BEST_VAL_DATA_LOSS: seeded.val_data_loss,
            Metric.TEST_ACCURACY: seeded.test_accuracy,
            "chosen": s is chosen,
        }
        for s in found
        for seeded in s.seeds
    ]
    return pd.DataFrame(rows)


def markdown(found: Sequence[Standing], chosen: Standing | None) -> str:
    """The spread over seeds of each of the best trials, as `search/seeds.md`."""
    lines = [
        "# The best trials over seeds",
        "",
        "Each of the comparison's best trials trained again with other `train.seed` values "
        "(the split fixed); the exported trial has the best mean valid accuracy "
        "(ties: the lower mean penalty-free valid loss). Standard deviations are over seeds.",
        "",
        "| trial | rank | seeds | valid accuracy per seed | valid mean ± std | "
        "min - max | test mean ± std | exported |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in found:
        values = [x.val_accuracy for x in s.seeds]
        seeds = ", ".join(str(x.seed) for x in s.seeds)
        if s.missing:
            seeds += f" (no result: {', '.join(map(str, s.missing))})"
        lines.append(
            f"| {s.trial} | {s.rank} | {seeds} | {', '.join(f'{v:.4f}' for v in values)} | "
            f"{s.mean:.4f} ± {s.std:.4f} | {min(values):.4f} - {max(values):.4f} | "
            f"{s.test_mean:.4f} ± {s.test_std:.4f} | {'yes' if s is chosen else ''} |"
        )
    return "\n".join(lines) + "\n"
