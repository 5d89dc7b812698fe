"""Model stage: a self-contained Keras network from raw 28x28 pixels to class probabilities."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import keras

from pipeline.stages.data.dataset import IMAGE_SHAPE


def build_model(
    *,
    hidden_units: Sequence[int],
    dropout_rate: float,
    l2_beta: float,
    num_classes: int,
    image_shape: tuple[int, ...],
    name: str,
    shift: float,
    rotation_deg: float,
    zoom: float,
    seed: int | None,
) -> keras.Model:
    """Rescale -> [augment] -> Flatten -> [Dense(ReLU) -> Dropout]* -> Dense(softmax).

    Every argument is keyword-only and has no default: the defaults are the config's
    (conf/model/, `pipeline.jobs.training.model_arguments` maps them here), so that a default
    written here cannot drift from the one a run records. The data gives `num_classes` and
    `image_shape`.

    The input is raw uint8 pixels; the course's normalisation (p - 127.5) / 255 is the first
    layer, so the saved model needs no preprocessing code. `l2_beta` is the lesson's beta in
    L' = L + beta/2 * ||W||^2; Keras' L2(l) adds l * sum(W^2), hence L2(beta / 2) on each
    kernel (biases are not penalised). With no hidden units this is multinomial logistic
    regression with (N+1)*K = 7850 parameters.

    `shift`, `rotation_deg`, `zoom` > 0 add Keras' random translation, rotation and zoom
    (edges filled with the nearest pixel) after rescaling: they act in training only and pass
    images through unchanged at inference, so the saved model stays deterministic. All 0 adds
    no layer at all. `seed` makes their draws repeatable.
    """
    regularizer = keras.regularizers.L2(l2_beta / 2) if l2_beta > 0 else None
    inputs = keras.Input(shape=image_shape, dtype="uint8", name="pixels")
    x = keras.layers.Rescaling(scale=1 / 255, offset=-0.5, name="normalise")(inputs)
    x = _augment(x, image_shape, shift, rotation_deg, zoom, seed)
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(
            units, activation="relu", kernel_regularizer=regularizer, name=f"hidden_{i}"
        )(x)
        if dropout_rate > 0:
            x = keras.layers.Dropout(dropout_rate, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", kernel_regularizer=regularizer, name="classes"
    )(x)
    return keras.Model(inputs, outputs, name=name)


def _augment(
    x: keras.KerasTensor,
    image_shape: tuple[int, ...],
    shift: float,
    rotation_deg: float,
    zoom: float,
    seed: int | None,
) -> keras.KerasTensor:
    """The random image layers (they need a channel axis); `x` unchanged when all are 0."""
    if not (shift or rotation_deg or zoom):
        return x
    x = keras.layers.Reshape((*image_shape, 1), name="channel")(x)
    fill = {"fill_mode": "nearest", "seed": seed}
    if shift:
        x = keras.layers.RandomTranslation(shift, shift, **fill, name="random_shift")(x)
    if rotation_deg:
        x = keras.layers.RandomRotation(rotation_deg / 360, **fill, name="random_rotation")(x)
    if zoom:
        x = keras.layers.RandomZoom(zoom, zoom, **fill, name="random_zoom")(x)
    return x


def parameter_count(
    hidden_units: Sequence[int], inputs: int = IMAGE_SHAPE[0] * IMAGE_SHAPE[1], classes: int = 10
) -> int:
    """Weights and biases of the network `build_model` makes, without building it: (N+1)*K per
    Dense layer, so 7850 for logistic regression on 28x28 images and 10 letters."""
    sizes = [inputs, *hidden_units, classes]
    return sum((n + 1) * k for n, k in itertools.pairwise(sizes))


# float32 copies of every parameter while training: the weights, their gradients, early
# stopping's kept best weights and the weights' initial values being drawn (a transient one),
# plus the optimizer's slots (momentum 1, Adam 2)
_COPIES = 4
OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "adam": 2}


def training_bytes(parameters: int, optimizer: str) -> int:
    """A lower bound on the memory training needs for its parameters alone: what to compare with
    the machine's before building a network that cannot fit (activations come on top)."""
    return parameters * 4 * (_COPIES + OPTIMIZER_SLOTS.get(optimizer, 2))


def dense_weights(model: keras.Model) -> int:
    """Multiply-accumulate weights per example: the sum of all Dense kernel sizes."""
    return sum(
        int(layer.kernel.shape[0] * layer.kernel.shape[1])
        for layer in model.layers
        if isinstance(layer, keras.layers.Dense)
    )


def flops_per_example(model: keras.Model) -> tuple[int, int]:
    """(forward, training step) floating-point operations per example.

    A forward pass costs a multiply and an add per weight (2W); backprop costs about twice
    the forward pass (gradients for the activations and for the weights), so a training step
    is about 6W.
    """
    w = dense_weights(model)
    return 2 * w, 6 * w
