"""Model stage: parameter counts, the lesson's L2 convention, in-model normalisation, dropout."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import new_model

from pipeline.stages.model import dense_weights, flops_per_example


def test_logistic_regression_has_7850_parameters() -> None:
    model = new_model(hidden_units=(), dropout_rate=0.0)
    assert model.count_params() == 784 * 10 + 10 == 7850
    assert flops_per_example(model) == (2 * 7840, 6 * 7840)


def test_mlp_parameter_count() -> None:
    model = new_model(hidden_units=(1024,), dropout_rate=0.5)
    assert model.count_params() == (784 + 1) * 1024 + (1024 + 1) * 10
    assert dense_weights(model) == 784 * 1024 + 1024 * 10


def test_deep_has_dropout_after_every_hidden_layer() -> None:
    model = new_model(hidden_units=(64, 32, 16), dropout_rate=0.3)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Dropout") == 3
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [64, 32, 16, 10]


@pytest.mark.parametrize("beta", [1e-3, 0.05])
def test_l2_penalty_is_beta_half_sum_of_squares(beta: float) -> None:
    """L' = L + beta/2 * ||W||^2 over the kernels (Keras' L2(l) adds l*sum(W^2): l = beta/2)."""
    model = new_model(hidden_units=(8,), dropout_rate=0.0, l2_beta=beta)
    rng = np.random.default_rng(0)
    kernels = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel = rng.normal(size=layer.kernel.shape).astype("float32")
            layer.kernel.assign(kernel)
            layer.bias.assign(np.ones(layer.bias.shape, "float32"))  # biases are not penalised
            kernels.append(kernel)
    model(np.zeros((1, 28, 28), np.uint8))
    penalty = float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses))
    expected = beta / 2 * sum(float((k.astype(np.float64) ** 2).sum()) for k in kernels)
    assert penalty == pytest.approx(expected, rel=1e-5)


def test_no_penalty_without_beta() -> None:
    model = new_model(hidden_units=(8,), l2_beta=0.0)
    model(np.zeros((1, 28, 28), np.uint8))
    assert model.losses == []


def test_normalisation_is_inside_the_model() -> None:
    model = new_model(hidden_units=(), dropout_rate=0.0)
    normalise = keras.Model(model.input, model.get_layer("normalise").output)
    pixels = np.array([[0, 255, 127]], np.uint8).repeat(28 * 28 // 3 + 1)[: 28 * 28]
    out = keras.ops.convert_to_numpy(normalise(pixels.reshape(1, 28, 28)))
    expected = (pixels.astype(np.float32) - 127.5) / 255
    np.testing.assert_allclose(out.reshape(-1), expected, atol=1e-6)


def test_dropout_only_while_training() -> None:
    keras.utils.set_random_seed(0)
    model = new_model(hidden_units=(256,), dropout_rate=0.5)
    x = np.random.default_rng(0).integers(0, 256, size=(16, 28, 28), dtype=np.uint8)
    first = model.predict(x, verbose=0)
    np.testing.assert_array_equal(first, model.predict(x, verbose=0))
    np.testing.assert_array_equal(first, keras.ops.convert_to_numpy(model(x, training=False)))
    # the same weights without Dropout layers give the same answer: evaluation ignores dropout
    plain = new_model(hidden_units=(256,), dropout_rate=0.0)
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(first, plain.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    # while training, units are dropped at random
    trained = keras.ops.convert_to_numpy(model(x, training=True))
    assert not np.allclose(trained, first)


def test_augmentation_off_is_the_same_model() -> None:
    """Off by default (conf/model/augment/none.yaml): no layer added, so earlier runs' models
    and results are unchanged."""
    plain = new_model(hidden_units=(16,), dropout_rate=0.5)
    off = new_model(hidden_units=(16,), dropout_rate=0.5, shift=0.0, rotation_deg=0.0, zoom=0.0)
    assert (plain.count_params(), len(plain.layers)) == (off.count_params(), len(off.layers))
    assert [type(layer).__name__ for layer in off.layers] == [
        "InputLayer",
        "Rescaling",
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]
    assert [layer.name for layer in off.layers] == [layer.name for layer in plain.layers]
    assert off.count_params() == plain.count_params()


def test_augmentation_only_while_training() -> None:
    """Random shifts, rotations and zooms change training inputs; inference is deterministic
    and sees the image as it is."""
    model = new_model(
        hidden_units=(16,), dropout_rate=0.0, shift=0.1, rotation_deg=10, zoom=0.1, seed=1
    )
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"RandomTranslation", "RandomRotation", "RandomZoom"} <= kinds
    images = np.random.default_rng(0).integers(0, 256, (8, 28, 28), dtype=np.uint8)
    first, second = model(images, training=False), model(images, training=False)
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(model(images, training=True), first)
    no_augment = new_model(hidden_units=(16,), dropout_rate=0.0)
    no_augment.set_weights(model.get_weights())
    np.testing.assert_allclose(no_augment(images, training=False), first, rtol=1e-6)
