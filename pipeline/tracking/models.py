"""Logging a trained Keras model so that MLflow's standard tools load and serve it."""

from __future__ import annotations

import contextlib
from typing import Any

from pipeline.names import Artifact


def pinned_requirements() -> list[str]:
    """The installed Keras/TensorFlow versions, given explicitly so that `log_model` does not
    spend seconds inferring requirements in a subprocess."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("keras", "tensorflow", "tensorflow-cpu"):
        with contextlib.suppress(PackageNotFoundError):
            pins.append(f"{dist}=={version(dist)}")
    return pins


def log_keras_model(model: Any, input_example: Any, name: str = Artifact.MODEL_NAME) -> str:
    """Log the model with a signature (raw uint8 images in, class probabilities out) and an
    input example; returns its `models:/` URI for `mlflow.pyfunc.load_model`."""
    import keras
    import mlflow.tensorflow
    from mlflow.models import infer_signature

    # The same layers and weights, without the training set-up (optimizer state, compile
    # options such as steps_per_execution): what a user loading the model needs, no more.
    model = keras.Model(model.inputs, model.outputs, name=model.name)
    signature = infer_signature(input_example, model.predict(input_example, verbose=0))
    # mlflow.tensorflow saves Keras 3 models in the native .keras format; mlflow.keras cannot
    # log an input example (it writes the example before creating the folder: mlflow#16183).
    info = mlflow.tensorflow.log_model(
        model,
        name=name,
        signature=signature,
        input_example=input_example,
        pip_requirements=pinned_requirements(),
    )
    return str(info.model_uri)
