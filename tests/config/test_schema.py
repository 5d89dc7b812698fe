"""Every config group composes into a valid config; bad values fail with one clear line."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CONF_DIR, settings

from pipeline.config import ConfigError, check_override_keys


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_defaults_compose() -> None:
    cfg = settings()
    assert cfg.data.source == "synthetic"
    assert cfg.model.hidden_units == (1024,)
    assert cfg.train.optimizer == "sgd"
    assert cfg.train.early_stopping.enabled


# options that need a value from the user to be complete
_REQUIRED = {"data=notmnist": ["data.path=notMNIST_small.tar.gz"]}


@pytest.mark.parametrize("group", ["data", "model", "train", "tracking"])
def test_every_group_option_composes(group: str) -> None:
    options = _options(group)
    assert options, f"conf/{group} is empty"
    for option in options:
        choice = f"{group}={option}"
        cfg = settings(choice, *_REQUIRED.get(choice, []))
        assert getattr(cfg, group) is not None


def test_notmnist_needs_a_path_or_url() -> None:
    with pytest.raises(ConfigError, match="data=notmnist needs data.path"):
        settings("data=notmnist")
    cfg = settings("data=notmnist_small")
    assert cfg.data.url.endswith("notMNIST_small.tar.gz")
    assert cfg.data.expected_size == 8_458_043


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.train_size=1.5"], "data.train_size=1.5: give a count"),
        (["data.train_size=0.8", "data.valid_size=0.3"], "split fractions add up to 1.2"),
        (["data.format=zip"], "data.format=zip: Input should be 'auto', 'tar'"),
        (["data.sha256=abc"], "data.sha256=abc: String should match pattern"),
    ],
)
def test_notmnist_settings_are_checked(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings("data=notmnist", "data.path=x.tar.gz", *overrides)


def test_split_sizes_take_counts_or_fractions() -> None:
    cfg = settings("data=notmnist", "data.path=x", "data.train_size=5000", "data.test_size=0.1")
    assert (cfg.data.train_size, cfg.data.test_size) == (5000, 0.1)
    assert isinstance(cfg.data.train_size, int)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model=logreg", ((), 0.0)),
        ("model=mlp", ((1024,), 0.5)),
        ("model=deep", ((1024, 512, 256), 0.3)),
    ],
)
def test_model_options(override: str, expected: tuple) -> None:
    cfg = settings(override)
    assert (cfg.model.hidden_units, cfg.model.dropout_rate) == expected


def test_overrides_reach_typed_config() -> None:
    cfg = settings(
        "model.dropout_rate=0.25",
        "model.l2_beta=1e-3",
        "train.epochs=30",
        "train.seed=7",
        "train.batch_size=512",
        "train.early_stopping.patience=5",
        "model.hidden_units=[64,32]",
        "tracking.experiment=other",
    )
    assert cfg.model.dropout_rate == 0.25
    assert cfg.model.l2_beta == pytest.approx(1e-3)
    assert (cfg.train.epochs, cfg.train.seed, cfg.train.batch_size) == (30, 7, 512)
    assert cfg.train.early_stopping.patience == 5
    assert cfg.model.hidden_units == (64, 32)
    assert cfg.tracking.experiment == "other"


def test_tracking_uri_follows_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert settings().tracking.uri == "http://mlflow.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert settings().tracking.uri is None
    assert settings("tracking.uri=sqlite:///x.db").tracking.uri == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.dropout_rate=1.0", "model.dropout_rate=1.0: Input should be less than 1"),
        ("model.dropout_rate=-0.1", "model.dropout_rate=-0.1: Input should be greater than"),
        ("model.l2_beta=-1e-3", "model.l2_beta=-0.001: Input should be greater than"),
        ("train.epochs=0", "train.epochs=0: Input should be greater than or equal to 1"),
        ("train.optimizer=adagrad", "train.optimizer=adagrad: Input should be 'sgd', 'momentum'"),
        ("train.early_stopping.monitor=acc", "'val_loss', 'val_accuracy', 'loss' or 'accuracy'"),
        ("train.batch_size=abc", "train.batch_size=abc: Input should be a valid integer"),
        ("model.hidden_units=[0]", "model.hidden_units.0=0: Input should be greater than"),
        (
            "+model.dropout=0.1",
            "unknown key 'model.dropout': model has augment, dropout_rate, hidden_units",
        ),
        ("+extra=1", "unknown key 'extra': the config has data, model, tracking, train"),
        ("train.seed=-1", "train.seed=-1: Input should be greater than or equal to 0"),
        ("train.seed=4294967296", "train.seed=4294967296: Input should be less than 4294967296"),
        ("data.seed=-1", "data.seed=-1: Input should be greater than or equal to 0"),
        ("model.l2_beta=inf", "model.l2_beta=inf: Input should be a finite number"),
        ("train.learning_rate=-inf", "train.learning_rate=-inf: Input should be a finite"),
        ("train.momentum=nan", "train.momentum=nan: Input should be a finite number"),
        ("train.early_stopping.min_delta=inf", "min_delta=inf: Input should be a finite"),
        # strict types: a bool is not a number, a number is not a bool, a quoted number is text
        ("train.seed=true", "train.seed=True: Input should be a valid integer"),
        ("train.epochs=2.0", "train.epochs=2.0: Input should be a valid integer"),
        ("train.learning_rate=true", "train.learning_rate=True: Input should be a valid number"),
        ("train.verbose=true", "train.verbose=True: expected a number or a word, not true/false"),
        ("data.cache=1", "data.cache=1: Input should be a valid boolean"),
        ("train.seed='7'", "train.seed=7: Input should be a valid integer"),
        ("data.train_size=true", "data.train_size=True: Input should be a valid integer"),
        # past float32 (Keras' dtype): refused before any work, not a traceback mid-build
        ("model.l2_beta=1e300", "model.l2_beta=1e+300: Input should be less than or equal to 100"),
        ("train.learning_rate=1e300", "train.learning_rate=1e+300: Input should be less than"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(override)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_several_problems_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"dropout_rate.*; .*epochs") as info:
        settings("model.dropout_rate=2", "train.epochs=0")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model.dropout=0.1"], "unknown key 'model.dropout': model has augment, dropout_rate"),
        (["train.early_stopping.wait=2"], "train.early_stopping has enabled, min_delta"),
        (["nope.x=1"], "unknown key 'nope': the config has data, model, tracking, train"),
        (["foo=1"], "unknown key 'foo': the config has data, model, tracking, train"),
    ],
)
def test_unknown_override_keys(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_override_keys(args)


def test_known_override_keys_pass() -> None:
    check_override_keys(
        [
            "model=logreg",
            "data=notmnist",
            "experiment=best",
            "hydra/launcher=parallel",
            "model.l2_beta=1e-3",
            "data.seed=3",
            "train.lr_decay.rate=0.9",
            "hydra.run.dir=/tmp/x",
            "+model.extra=1",
            "--cfg",
            "job",
        ]
    )


def test_seeds_take_the_whole_range_numpy_accepts() -> None:
    """0 and 2**32 - 1 both pass validation and both split the data (sklearn takes the seed
    of each consecutive split, seed + i, modulo 2**32)."""
    from pipeline.stages.data import stratified_split

    labels = np.repeat(np.arange(10), 10)
    for seed in (0, 2**32 - 1):
        cfg = settings(f"train.seed={seed}", f"data.seed={seed}")
        assert (cfg.train.seed, cfg.data.seed) == (seed, seed)
        parts = stratified_split(labels, (50, 20, 20), seed)
        assert [len(p) for p in parts] == [50, 20, 20]
