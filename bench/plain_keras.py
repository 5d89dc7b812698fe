"""The training a user would write with Keras alone: the baseline of bench/run_cost.py.

    .venv/bin/python bench/plain_keras.py DATA.npz [--epochs 10] [--batch-size 512]

The pipeline's default network and training (pipeline/stages/model.py, pipeline/stages/
train.py, conf/train/sgd.yaml) with no pipeline, MLflow or Hydra: read the splits (uint8
images and labels, as bench/run_cost.py writes them), train with early stopping, evaluate on
test, print the accuracy. Its wall time, start-up and exit included, is what a run costs
without tracking, so nothing here is tuned beyond what a user would do.
"""

from __future__ import annotations

import argparse
import os

# no C++ banner, as any user would set; before the import, which reads it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

SEED = 42
L2_BETA = 1e-4  # the lesson's beta in L + beta/2 * ||W||^2, hence Keras' L2(beta / 2)


def build_model(image_shape: tuple[int, ...], num_classes: int = 10) -> keras.Model:
    """Rescale -> Flatten -> Dense(1024, ReLU) -> Dropout(0.5) -> Dense(softmax), L2 on kernels."""
    inputs = keras.Input(shape=image_shape, dtype="uint8")
    x = keras.layers.Rescaling(scale=1 / 255, offset=-0.5)(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(
        1024, activation="relu", kernel_regularizer=keras.regularizers.L2(L2_BETA / 2)
    )(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", kernel_regularizer=keras.regularizers.L2(L2_BETA / 2)
    )(x)
    return keras.Model(inputs, outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="npz with {train,valid,test}_{images,labels}")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()

    with np.load(args.data) as data:
        splits = {k: data[k] for k in data.files}
    keras.utils.set_random_seed(SEED)
    model = build_model(splits["train_images"].shape[1:])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=32,
    )
    history = model.fit(
        splits["train_images"],
        splits["train_labels"],
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(splits["valid_images"], splits["valid_labels"]),
        shuffle=True,
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
        ],
        verbose=0,
    )
    _, accuracy = model.evaluate(splits["test_images"], splits["test_labels"], verbose=0)
    print(f"test accuracy {accuracy:.4f} after {len(history.history['loss'])} epochs")


if __name__ == "__main__":
    main()
