"""The lesson's experiments (conf/experiment/): every one composes, every point of its sweep
is a valid config, and it runs."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from conftest import CONF_DIR, TINY, cli, compose_config, new_model, settings
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.tracking import MlflowClient

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def _grid(experiment: str) -> list[list[str]]:
    """Every combination of the experiment's `hydra.sweeper.params`, as override lists."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", [f"experiment={experiment}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    parser = OverridesParser.create()
    axes = []
    for key, values in params.items():
        [override] = parser.parse_overrides([f"{key}={values}"])
        axes.append([f"{key}={v}" for v in override.sweep_string_iterator()])
    return [list(point) for point in itertools.product(*axes)]


def test_all_seven_lessons_are_there() -> None:
    lessons = [
        "best",
        "deep_vs_wide",
        "dropout",
        "early_stopping",
        "l2",
        "linear_vs_mlp",
        "overfit",
    ]
    searched = ["searched", "searched_wide"]  # the best trials of the two real studies
    assert sorted([*lessons, *searched]) == EXPERIMENTS


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_sweep_point_is_a_valid_config(experiment: str) -> None:
    points = _grid(experiment)
    for point in points:
        cfg = settings(f"experiment={experiment}", *point)
        assert cfg.tracking.experiment == experiment
    expected = {
        "best": 1,
        "deep_vs_wide": 2,
        "dropout": 3,
        "early_stopping": 2,
        "l2": 8,
        "linear_vs_mlp": 2,
        "overfit": 4,
        "searched": 1,
        "searched_wide": 1,
    }
    assert len(points) == expected[experiment]


def test_deep_and_wide_share_a_parameter_budget() -> None:
    counts = [
        new_model(
            hidden_units=settings("experiment=deep_vs_wide", *p).model.hidden_units
        ).count_params()
        for p in _grid("deep_vs_wide")
    ]
    assert counts == [814_090, 824_394]
    assert abs(counts[0] - counts[1]) / counts[0] < 0.02


def test_overfit_trains_on_three_batches_without_early_stopping() -> None:
    cfg = settings("experiment=overfit")
    assert cfg.data.train_size == 3 * cfg.train.batch_size
    assert not cfg.train.early_stopping.enabled


# The experiments differ in settings only, and every point of every one is validated above;
# these train (tiny) with what the others do not: momentum with a decaying rate (best),
# augmentation on Adam monitoring val_accuracy (searched), no early stopping (overfit); both
# models (logreg, mlp) run in test_a_sweep_experiment_is_one_command.
TRAINED = ("best", "searched", "overfit")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", TRAINED)
def test_experiment_runs_an_epoch(experiment: str, store_uri: str) -> None:
    from pipeline.jobs.training import run

    point = _grid(experiment)[-1]
    cfg = settings(f"experiment={experiment}", *point, *TINY, "train.epochs=1")
    metrics = run(cfg)
    assert metrics["epochs_run"] == 1
    client = MlflowClient(store_uri)
    [found] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert found.info.status == "FINISHED"


@pytest.mark.slow
def test_a_sweep_experiment_is_one_command(store_uri: str, tmp_path: Path) -> None:
    result = cli(
        "experiment=linear_vs_mlp",
        *(o for o in TINY if not o.startswith("model.")),  # the experiment picks the models
        "train.epochs=1",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store_uri)
    runs = client.search_runs([client.get_experiment_by_name("linear_vs_mlp").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("sweep") == "true"]
    children = {r.info.run_name: r for r in runs if r is not parent}
    assert set(children) == {"model=logreg", "model=mlp"}
    assert children["model=logreg"].data.metrics["param_count"] == 7850
    assert parent.data.tags["best.run_name"] in children


def test_compose_helper_sees_experiments() -> None:
    assert compose_config("experiment=best").model.hidden_units == [1024, 512, 256]
