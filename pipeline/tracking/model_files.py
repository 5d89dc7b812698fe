"""A trained network as files for `models.log_model_files`: made by the process that trained
it (it needs Keras), logged by the one that records the run (it needs MLflow)."""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# As in pipeline.stages.data, whose package import would load the letter renderer into every
# process that loads the model.
IMAGE_SHAPE = (28, 28)
KERAS_FILE_KEY = "keras_model"  # the model's artifact key of the native .keras file


@dataclass(frozen=True)
class ModelFiles:
    """A saved `.keras` network in its own temporary folder (the logger deletes it), with
    what its MLflow model needs to say about it."""

    folder: str
    keras_file: str
    example: np.ndarray  # a few test images, the model's input example
    output_dtype: str  # of the probabilities, for the signature
    classes: int
    requirements: list[str]


def pinned_requirements() -> list[str]:
    """The installed versions of what loading the model imports, given explicitly so that
    logging it does not spend seconds inferring requirements in a subprocess."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("keras", "tensorflow", "tensorflow-cpu", "numpy", "pydantic"):
        with contextlib.suppress(PackageNotFoundError):
            pins.append(f"{dist}=={version(dist)}")
    return pins


def save_model_files(model: Any, input_example: Any) -> ModelFiles:
    """Save the network's layers and weights, without the training set-up (optimizer state,
    compile options such as steps_per_execution): what a user loading the model needs."""
    import keras

    model = keras.Model(model.inputs, model.outputs, name=model.name)
    example = np.asarray(input_example)
    [output] = model.outputs  # the probabilities: their dtype and width, for the signature
    folder = Path(tempfile.mkdtemp(prefix="pipeline-model-"))
    keras_file = folder / "model.keras"
    model.save(keras_file)
    return ModelFiles(
        folder=str(folder),
        keras_file=str(keras_file),
        example=example.astype(np.float64),
        output_dtype=str(keras.backend.standardize_dtype(output.dtype)),
        classes=int(output.shape[-1]),
        requirements=pinned_requirements(),
    )
