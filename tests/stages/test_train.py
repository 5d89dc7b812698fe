"""The training stage: optimisers, early termination, exact reproducibility."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import compiled, fit_args, new_model, new_optimizer, synthetic_args

from pipeline.stages.data import load_synthetic
from pipeline.stages.train import DivergedError, StopOnDivergence, fit, seed_everything


@pytest.fixture(scope="module")
def data():
    return load_synthetic(
        **synthetic_args(
            train_size=400,
            valid_size=100,
            test_size=100,
            fonts=("DejaVuSans.ttf", "cmr10.ttf", "DejaVuSerif-Bold.ttf"),
        )
    )


def _train(data, seed: int = 1, epochs: int = 3, steps_per_execution: int = 4, **kw):
    seed_everything(seed)
    model = compiled(
        new_model(hidden_units=(32,), dropout_rate=0.5, l2_beta=1e-4),
        steps_per_execution=steps_per_execution,
    )
    result = fit(
        model, data.train, data.valid, **fit_args(epochs=epochs, batch_size=64, verbose=0, **kw)
    )
    return model, result


@pytest.mark.parametrize(
    ("name", "cls", "momentum"),
    [("sgd", keras.optimizers.SGD, 0.0), ("momentum", keras.optimizers.SGD, 0.8)],
)
def test_sgd_variants(name: str, cls: type, momentum: float) -> None:
    opt = new_optimizer(name=name, learning_rate=0.3, momentum=0.8)
    assert isinstance(opt, cls)
    assert opt.momentum == pytest.approx(momentum)
    assert float(opt.learning_rate) == pytest.approx(0.3)


def test_adam_and_decay() -> None:
    opt = new_optimizer(
        name="adam", learning_rate=0.01, decay_rate=0.5, decay_steps=10, staircase=True
    )
    assert isinstance(opt, keras.optimizers.Adam)
    schedule = opt._learning_rate
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(10)) == pytest.approx(0.005)
    assert float(schedule(19)) == pytest.approx(0.005)


def test_unknown_optimizer() -> None:
    with pytest.raises(ValueError, match="adagrad"):
        new_optimizer(name="adagrad")


def test_history_and_best_epoch(data) -> None:
    _, result = _train(data, epochs=3)
    assert list(result.history.index) == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(result.history.columns)
    best = int(result.history["val_loss"].idxmin())
    assert result.best_epoch == best
    assert result.best["val_loss"] == result.history["val_loss"].min()


def test_early_stopping_restores_best_weights(data) -> None:
    # lr far too high: val_loss gets worse after the first epochs and training stops early
    seed_everything(3)
    model = new_model(hidden_units=(32,), dropout_rate=0.0, l2_beta=0.0)
    compiled(model, optimizer=new_optimizer(learning_rate=5.0))
    result = fit(
        model, data.train, data.valid, **fit_args(epochs=30, batch_size=64, patience=1, verbose=0)
    )
    assert result.stopped_early
    assert len(result.history) < 30
    assert result.best_epoch < len(result.history)
    val_loss = model.evaluate(data.valid.images, data.valid.labels, verbose=0)[0]
    assert val_loss == pytest.approx(result.best["val_loss"], rel=1e-4)


def test_without_early_stopping_all_epochs_run(data) -> None:
    _, result = _train(data, epochs=4, early_stopping_monitor=None)
    assert len(result.history) == 4
    assert result.best_epoch == 4
    assert not result.stopped_early


def test_same_seed_same_metrics_to_the_last_digit(data) -> None:
    model_a, a = _train(data, seed=11)
    model_b, b = _train(data, seed=11)
    assert a.history.to_dict() == b.history.to_dict()
    for wa, wb in zip(model_a.get_weights(), model_b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    _, c = _train(data, seed=12)
    assert a.history.to_dict() != c.history.to_dict()


def test_steps_per_execution_changes_speed_not_results(data) -> None:
    """Several batches per compiled call run the same updates in the same order."""
    _, one = _train(data, seed=5, steps_per_execution=1)
    _, many = _train(data, seed=5, steps_per_execution=8)
    assert one.history.to_dict() == many.history.to_dict()


def test_diverged_training_stops_naming_the_epoch(data) -> None:
    """lr=1e30 passes validation (it is finite) and sends the loss to NaN in the first epoch:
    training stops there with one line, instead of running every epoch to a NaN model."""
    seed_everything(0)
    model = new_model(hidden_units=(32,), dropout_rate=0.0, l2_beta=0.0)
    compiled(model, optimizer=new_optimizer(learning_rate=1e30))
    with pytest.raises(DivergedError) as info:
        fit(
            model,
            data.train,
            data.valid,
            **fit_args(epochs=20, batch_size=64, early_stopping_monitor=None, verbose=0),
            callbacks=[StopOnDivergence(1e30)],
        )
    assert str(info.value) == (
        "loss became nan at epoch 1: try a smaller train.learning_rate (now 1e+30), "
        "or check the data for extreme values"
    )


def test_checkpoint_of_a_run_that_stopped_early_resumes_to_its_result(data, tmp_path) -> None:
    """Killed after early stopping ended training but before the run finished: resuming
    trains no further and restores the same best weights, history and best epoch."""
    stop = {"early_stopping_monitor": "val_loss", "patience": 0, "min_delta": 10.0}
    model, first = _train(data, epochs=20, checkpoint_dir=tmp_path, **stop)
    assert first.stopped_early
    assert (tmp_path / "latest.json").exists()
    # a fresh process would build the model anew (another seed: its weights must not matter)
    again, resumed = _train(data, seed=2, epochs=20, checkpoint_dir=tmp_path, **stop)
    assert resumed.stopped_early
    assert resumed.best_epoch == first.best_epoch
    assert resumed.history.equals(first.history)
    for mine, theirs in zip(again.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize(
    "state",
    [
        {"epoch": 2, "folder": "../../elsewhere", "history": []},
        {"epoch": 2, "folder": "epoch-3", "history": []},
        {"epoch": "2", "folder": "epoch-2", "history": []},
        "not json",
    ],
)
def test_a_checkpoints_latest_file_names_only_its_own_epoch_folder(tmp_path, state) -> None:
    """What `latest.json` names is followed only when it is the folder `Checkpoint` writes."""
    import json

    from pipeline.stages.train import CheckpointError, latest_checkpoint

    (tmp_path / "latest.json").write_text(state if isinstance(state, str) else json.dumps(state))
    with pytest.raises(CheckpointError):
        latest_checkpoint(tmp_path)
    assert latest_checkpoint(tmp_path / "none") is None
