"""Search spaces (conf/search/): every option composes; a bad space names the key in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import CONF_DIR, cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.config import ConfigError, SearchConfig, validate, validate_search


def study_config(*overrides: str) -> tuple[SearchConfig, dict[str, object]]:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        raw = OmegaConf.to_container(compose("study", list(overrides)), resolve=True)
    assert isinstance(raw, dict)
    search = raw.pop("search")
    return validate_search(search, validate(raw)), search


@pytest.mark.parametrize("space", sorted(p.stem for p in (CONF_DIR / "search").glob("*.yaml")))
def test_every_space_composes(space: str) -> None:
    search, _ = study_config(f"search={space}")
    assert search.study == space
    assert search.params


def _check(params: dict[str, object]) -> None:
    _, raw = study_config()
    base = validate(OmegaConf.to_container(_base(), resolve=True))
    validate_search({**raw, "params": params}, base)


def _base() -> object:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"model.dropout": {"kind": "float", "low": 0, "high": 0.5}},
            "search.params.model.dropout: unknown key 'model.dropout': model has augment, "
            "dropout_rate, hidden_units, l2_beta, name",
        ),
        (
            {"model.dropout_rate": {"kind": "float", "low": 0, "high": 1.5}},
            "search.params.model.dropout_rate.high: model.dropout_rate=1.5: "
            "Input should be less than 1",
        ),
        (
            {"model.l2_beta": {"kind": "log_float", "low": 0, "high": 0.1}},
            "search.params.model.l2_beta: kind log_float needs low > 0 and no step",
        ),
        (
            {"train.batch_size": {"kind": "int", "low": 256, "high": 64}},
            "search.params.train.batch_size: low=256 must be below high=64",
        ),
        (
            {"train.optimizer": {"kind": "categorical", "choices": ["adam", "rmsprop"]}},
            "search.params.train.optimizer.choices[1]: train.optimizer=rmsprop: Input should be",
        ),
        (
            {"model.l2_beta": {"kind": "uniform", "low": 0, "high": 0.1}},
            "search.params.model.l2_beta.kind=uniform: Input should be 'float', 'log_float'",
        ),
        ({"train.lr_decay": {"kind": "float", "low": 0.5, "high": 1}}, "a section, not a setting"),
    ],
)
def test_bad_space_names_the_key(params: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _check(params)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_bad_space_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A space file of the user's own (on Hydra's search path) with a misspelt key."""
    (tmp_path / "search").mkdir()
    space = {
        "study": "typo",
        "params": {"model.l2beta": {"kind": "log_float", "low": 1e-6, "high": 1}},
    }
    (tmp_path / "search" / "typo.yaml").write_text(yaml.safe_dump(space))
    result = cli("search", f"hydra.searchpath=[file://{tmp_path}]", "search=typo")
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("config error: search.params.model.l2beta: unknown key 'model.l2beta'")
