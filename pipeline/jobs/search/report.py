"""A study's report on its parent run: Optuna's figures, the sweeps' comparison, the trials,
the best trials over seeds, and the best one as a ready experiment file."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from pipeline.jobs.search import export, seeds
from pipeline.jobs.search.study import Study
from pipeline.names import Artifact, Metric, Tag

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

FIGURES = ("optimization_history", "param_importances", "parallel_coordinate", "slice")


def report(study: Study, reruns: seeds.Reruns | None = None) -> str | None:
    """Log the study's report onto its parent run and end it (FINISHED when a trial
    completed, else FAILED); return the best trial's experiment YAML, if any. With `reruns`,
    the best trials' missing seeds are trained first; without, the report uses those found."""
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    from pipeline.reporting.comparison import compare, find_runs
    from pipeline.reporting.publish import log_comparison
    from pipeline.tracking.runs.lifecycle import end_run

    client = MlflowClient(study.store.uri)
    parent = study.parent_run_id
    folder = Artifact.SEARCH_DIR
    runs = find_runs([study.store.experiment_id], parent)
    ranked = runs.iloc[0:0]
    if not runs.empty:
        comparison = compare(runs, client)
        ranked = ranked_trials(runs, comparison.table)
        pruned = runs.get(f"tags.{Tag.PRUNED}")
        pruned_ids = set(runs.loc[pruned == "true", "run_id"]) if pruned is not None else set()
        comparison.failures = comparison.failures[~comparison.failures["run_id"].isin(pruned_ids)]
        log_comparison(client, parent, comparison, f"study {study.search.study}")
    trials = study.optuna.trials_dataframe()
    client.log_text(parent, trials.to_csv(index=False), f"{folder}/trials.csv")
    for name, fig in optuna_figures(study.optuna).items():
        client.log_figure(parent, fig, f"{folder}/{name}.png")
        plt.close(fig)
    states = [t.state for t in study.optuna.trials]
    tags = {f"{Tag.SEARCH}.{s.name.lower()}": str(states.count(s)) for s in set(states)}
    text = None
    if not ranked.empty:
        text, best_tags = _best(study, client, ranked, reruns)
        tags |= best_tags
    for key, value in tags.items():
        client.set_tag(parent, key, value)
    if study.active():
        log.info("Report of study '%s' logged; trials still run", study.search.study)
        return text
    end_run(parent, "FINISHED" if text else "FAILED", client=client)
    log.info("Study '%s' ended: report on its parent run %s", study.search.study, parent)
    return text


def ranked_trials(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The finished trial runs of `runs`, in the comparison's order (`table`, best first):
    the highest valid accuracy, ties (common: one image of 687 is 0.15 point) by the lower
    penalty-free valid loss, where Optuna's `best_trial` would take the lowest number."""
    column = f"tags.{Tag.SEARCH_TRIAL}"
    if column not in runs:
        return runs.iloc[0:0]
    order = {run_id: i for i, run_id in enumerate(table["run_id"])}
    finished = runs[(runs["status"] == "FINISHED") & runs[column].astype(str).str.isdecimal()]
    return finished.sort_values("run_id", key=lambda ids: ids.map(order)).reset_index(drop=True)


def _best(
    study: Study,
    client: MlflowClient,
    ranked: pd.DataFrame,
    reruns: seeds.Reruns | None,
) -> tuple[str, dict[str, str]]:
    """Choose the best trial (over seeds where the study reruns its best), log its
    experiment file and the seeds' table, and export it where `search.export` says."""
    from mlflow.entities import Metric as MetricPoint

    folder = Artifact.SEARCH_DIR
    found = seeds.standings(study, ranked, reruns)
    if found:
        chosen = seeds.choose(found)
        trial, run_id = chosen.trial, chosen.run_id
        listed = ", ".join(str(s.seed) for s in chosen.seeds)
        why = (
            f"mean {Metric.BEST_VAL_ACCURACY} {chosen.mean:.4f} ± {chosen.std:.4f} over "
            f"train.seed {listed} (the {len(found)} best trials over seeds: search/seeds.md)"
        )
        client.log_text(study.parent_run_id, seeds.markdown(found, chosen), f"{folder}/seeds.md")
        table = seeds.table(found, chosen)
        client.log_text(study.parent_run_id, table.to_csv(index=False), f"{folder}/seeds.csv")
        client.log_batch(
            study.parent_run_id,
            metrics=[
                MetricPoint(f"seeds.{Metric.BEST_VAL_ACCURACY}.mean", chosen.mean, 0, 0),
                MetricPoint(f"seeds.{Metric.BEST_VAL_ACCURACY}.std", chosen.std, 0, 0),
                MetricPoint(f"seeds.{Metric.TEST_ACCURACY}.mean", chosen.test_mean, 0, 0),
            ],
        )
        for s in found:
            log.info(
                "Trial %d over train.seed %s: %s %.4f ± %.4f%s",
                s.trial,
                ", ".join(str(x.seed) for x in s.seeds),
                Metric.BEST_VAL_ACCURACY,
                s.mean,
                s.std,
                " (the best: exported)" if s is chosen else "",
            )
    else:
        first = ranked.iloc[0]
        trial, run_id = int(first[f"tags.{Tag.SEARCH_TRIAL}"]), str(first["run_id"])
        value = float(first[f"metrics.{Metric.BEST_VAL_ACCURACY}"])
        why = f"{Metric.BEST_VAL_ACCURACY} {value:.4f}"
    where = export.target(study.search.export, study.search.study) if study.search.export else None
    config = export.trial_config(client, run_id, study.tracking)
    params = next((t.params for t in study.optuna.trials if t.number == trial), {})
    data = study.data_overrides()
    text = export.experiment_yaml(config, study.search.study, trial, params, why, where, data)
    client.log_text(study.parent_run_id, text, f"{folder}/best_experiment.yaml")
    if where is not None:
        export.write(where, text)
        log.info("Best trial written to %s. Run it: %s", where.file, export.command(where, data))
    tags = {f"{Tag.SEARCH}.best_trial": str(trial), f"{Tag.SEARCH}.best_run_id": run_id}
    return text, tags


def optuna_figures(study: optuna.Study) -> dict[str, Any]:
    """Optuna's matplotlib figures that this study can draw (importances need two complete
    trials, for instance): name -> matplotlib Figure."""
    import numpy as np
    from optuna.visualization import matplotlib as plots

    draw: dict[str, Callable[[optuna.Study], Any]] = {
        "optimization_history": plots.plot_optimization_history,
        "param_importances": plots.plot_param_importances,
        "parallel_coordinate": plots.plot_parallel_coordinate,
        "slice": plots.plot_slice,
    }
    figures = {}
    # the slice plot's categorical axes (layer lists, batch sizes) make matplotlib log a line
    # per axis saying that their labels look like numbers: they are meant as categories
    category_log = logging.getLogger("matplotlib.category")
    level = category_log.level
    category_log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", "This figure includes Axes", UserWarning)
            for name, plot in draw.items():
                try:
                    axes = plot(study)
                except (ValueError, RuntimeError, ZeroDivisionError) as exc:
                    log.info("No %s figure: %s", name, exc)
                    continue
                fig = np.asarray(axes).flat[0].figure
                fig.set_size_inches(max(fig.get_size_inches()[0], 8), 5)
                fig.tight_layout()
                figures[name] = fig
    finally:
        category_log.setLevel(level)
    return figures
