"""The search's parts without a study run: what a study records and how a joining worker's
settings are compared, the choice over seeds, the export's target and command, and the
room rules (Optuna's private API in `storage.py` only; no MLflow on the worker's import path;
`tests/tracking/runs/test_lifecycle.py` checks that the search ends its runs through the
lifecycle)."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import PROJECT_ROOT, compose_config, settings
from omegaconf import OmegaConf

from pipeline.config import ConfigError, SearchConfig, validate, validate_search
from pipeline.jobs.search import export, seeds
from pipeline.jobs.search.report import ranked_trials
from pipeline.jobs.search.study import differences, started_with
from pipeline.names import Tag
from pipeline.reporting.comparison import compare

SEARCH = PROJECT_ROOT / "pipeline" / "jobs" / "search"


def _search(*overrides: str) -> SearchConfig:
    from hydra import compose, initialize_config_dir

    from pipeline.config import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        raw = OmegaConf.to_container(compose("study", overrides=list(overrides)), resolve=True)
    assert isinstance(raw, dict)
    return validate_search(raw.pop("search"), validate(raw))


def test_a_study_records_every_fixed_setting_and_not_the_searched_ones() -> None:
    search = _search("search=pruning")
    record = started_with(settings("train.epochs=7"), search, "ab" * 32)
    assert record["data.digest"] == "ab" * 32
    assert record["train.epochs"] == 7
    assert record["train.early_stopping.patience"] == 3
    assert record["data.train_size"] == settings().data.train_size
    assert record["model.hidden_units"] == [1024]
    assert "train.learning_rate" not in record  # searched: the trials' own values
    assert record["search.params.train.learning_rate"]["kind"] == "log_float"
    for unrelated in ("data.cache", "data.cache_dir", "train.verbose", "tracking.experiment"):
        assert unrelated not in record  # where data is cached, how runs show: not a meaning
    real = settings("data=notmnist", "data.path=/a/b.tar.gz")
    moved = settings("data=notmnist", "data.path=/c/b.tar.gz")
    assert started_with(real, search, "x") == started_with(moved, search, "x")


def test_differences_name_old_and_new_values() -> None:
    old = {"data.digest": "a" * 64, "train.epochs": 3, "model.hidden_units": [32]}
    new = {"data.digest": "b" * 64, "train.epochs": 4, "model.hidden_units": [32], "x.y": 1}
    assert differences(old, new) == [
        f"data.digest {'a' * 12} -> {'b' * 12}",
        "train.epochs 3 -> 4",
        "x.y absent -> 1",
    ]
    assert differences(old, dict(old)) == []


def _standing(trial: int, rank: int, accuracies: list[float]) -> seeds.Standing:
    runs = [seeds.Seeded(s, f"r{trial}{s}", a, 0.3, a - 0.02) for s, a in enumerate(accuracies)]
    return seeds.Standing(trial, f"r{trial}0", rank, runs)


def test_the_export_is_the_best_mean_over_seeds_not_the_luckiest_seed() -> None:
    """Trial 5 tops the study on its own seed, and falls back on the others; trial 9 holds."""
    lucky = _standing(5, 1, [0.93, 0.90, 0.89])
    steady = _standing(9, 2, [0.92, 0.92, 0.91])
    assert seeds.choose([lucky, steady]) is steady
    assert steady.std == pytest.approx(0.005773502, abs=1e-8)
    text = seeds.markdown([lucky, steady], steady)
    assert "| 9 | 2 | 0, 1, 2 | 0.9200, 0.9200, 0.9100 | 0.9167 ± 0.0058 |" in text
    frame = seeds.table([lucky, steady], steady)
    assert list(frame.loc[frame["chosen"], "trial"]) == [9, 9, 9]


def test_a_tie_in_valid_accuracy_goes_to_the_run_the_comparison_ranks_first() -> None:
    """Optuna's `best_trial` breaks ties by trial number; the study ranks its trials as the
    comparison does (ties by the lower penalty-free valid loss), as in a real study where
    trials 13, 30 and 46 all reached 0.9301."""
    study = optuna.create_study(direction="maximize")
    for value in (0.93, 0.93, 0.91):
        study.add_trial(optuna.trial.create_trial(value=value))
    runs = pd.DataFrame(
        {
            "run_id": ["r0", "r1", "r2", "r3"],
            "status": ["FINISHED", "FINISHED", "FINISHED", "KILLED"],
            f"tags.{Tag.SEARCH_TRIAL}": ["0", "1", "2", "3"],
            "metrics.best_val_accuracy": [0.93, 0.93, 0.91, 0.99],
            "metrics.best_val_data_loss": [0.32, 0.30, 0.25, 0.1],
            "metrics.test_accuracy": [0.90, 0.91, 0.89, 0.95],
        }
    )
    assert study.best_trial.number == 0
    ranked = ranked_trials(runs, compare(runs).table)
    assert list(ranked[f"tags.{Tag.SEARCH_TRIAL}"]) == ["1", "0", "2"]  # a pruned run is not


def test_export_target_and_its_command(tmp_path: Path) -> None:
    folder = export.target(str(tmp_path / "conf"), "wide")
    assert folder.file == tmp_path / "conf" / "experiment" / "wide_best.yaml"
    assert (folder.folder, folder.name) == (tmp_path / "conf", "wide_best")
    named = export.target(str(tmp_path / "my conf" / "experiment" / "mine.yaml"), "wide")
    assert (named.folder, named.name) == (tmp_path / "my conf", "mine")
    line = export.command(named, ["data=notmnist", "data.path=/d/x y.tar.gz"])
    assert shlex.split(line) == [
        "notmnist",
        "train",
        "--config-dir",
        str(tmp_path / "my conf"),
        "experiment=mine",
        "data=notmnist",
        "data.path=/d/x y.tar.gz",
    ]


def test_the_exported_file_composes_with_the_printed_command(tmp_path: Path) -> None:
    """What `--config-dir <folder> experiment=<name>` composes is the file's settings."""
    from hydra import compose, initialize_config_dir

    from pipeline.config import config_dir

    where = export.target(str(tmp_path), "s")
    config = settings("model.hidden_units=[64,32]", "train.seed=9").model_dump(mode="json")
    text = export.experiment_yaml(config, "s", 3, {"model.l2_beta": 1e-4}, "why", where, [])
    export.write(where, text)
    args = shlex.split(export.command(where, ["data.train_size=500"]))
    assert args[:3] == ["notmnist", "train", "--config-dir"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra.searchpath=[file://{args[3]}]", *args[4:]])
    composed = validate(OmegaConf.to_container(cfg, resolve=True))
    assert list(composed.model.hidden_units) == [64, 32]
    assert composed.train.seed == 9
    assert composed.data.train_size == 500
    assert composed.tracking.experiment == "s_best"
    assert compose_config().tracking.experiment != "s_best"


@pytest.mark.parametrize(
    ("export_path", "message"),
    [
        ("/x/mine.yaml", "an experiment file goes in a folder named experiment/"),
        ("/x/experiment/best.yaml", "experiment=best is one of the project's own"),
        ("/x/experiment/a b.yaml", "the file's name must be <name>.yaml"),
    ],
)
def test_export_paths_that_hydra_could_not_use_are_refused(export_path: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _search(f"search.export={export_path}")


def _imports_and_attributes(path: Path) -> list[str]:
    """Optuna's private names a module uses: `optuna.x._y` imports and `._y` attributes
    other than the module's own (`self._`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        module = node.module if isinstance(node, ast.ImportFrom) else None
        if module and module.startswith("optuna") and "._" in module:
            found.append(module)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if node.attr.startswith("__"):  # super().__init__: Python's, not Optuna's
                continue
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(node.attr)
    return found


def test_only_the_storage_module_touches_optunas_private_api() -> None:
    for module in sorted(SEARCH.glob("*.py")):
        used = _imports_and_attributes(module)
        if module.name == "storage.py":
            assert used, "storage.py is where the private uses are"
            text = module.read_text()
            assert text.count("optuna/optuna#") >= 3  # each use names its upstream issue
        else:
            assert used == [], f"{module.name} uses {used}"


def test_the_worker_and_its_training_path_import_no_mlflow() -> None:
    """A trial's run is recorded by the recorder's helper process: the worker's modules (and
    training, which they import) leave MLflow to the calls that read or write the study's runs."""
    import subprocess
    import sys

    code = "import sys, pipeline.jobs.search.worker; print('mlflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert result.stdout.strip() == "False"
