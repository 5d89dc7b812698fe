"""Logging a trained Keras model so that MLflow's standard tools load, serve and check it.

The model is logged as a pyfunc `LetterClassifier` that holds the native `.keras` file as an
artifact and validates its input before predicting: raw pixels 0-255 as uint8, integers or
floats (JSON gives floats or integers), one (28, 28) image or a list or array of them.
Anything else (values scaled to 0-1, fractions, other shapes) is refused with a message
whose first line says what was expected; the scoring server turns it into HTTP 400.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc.model import PythonModel, PythonModelContext

from pipeline.names import Artifact
from pipeline.tracking.models.files import (
    IMAGE_SHAPE,
    KERAS_FILE_KEY,
    ModelFileError,
    ModelFiles,
    load_network,
    network_file,
    save_model_files,
)

_BATCH = 8192  # images per Keras predict step: large batches, few Python round trips
_EXPECTED = "expected images of shape (n, 28, 28) (or one (28, 28) image) of pixel values 0-255"


class ImageInputError(MlflowException):
    """Refused input: INVALID_PARAMETER_VALUE (HTTP 400 from the scoring server), whose
    message stays what was expected and what came.

    MLflow's scoring server rewrites a failed prediction's message as "Failed to predict data
    '<the whole request>'. Error: <message>", which would open the user's error with a dump of
    every pixel sent; a rewrite that only wraps the message is therefore ignored.
    """

    _text: str = ""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._text

    @message.setter
    def message(self, value: str) -> None:
        if self._text and value.endswith(self._text):
            return
        self._text = value


def check_images(images: Any) -> np.ndarray:
    """Raw pixels as a (n, 28, 28) uint8 array, or an MlflowException (INVALID_PARAMETER_VALUE)
    whose first line says what was expected and what came instead: never the array itself."""
    if hasattr(images, "to_numpy"):  # a pandas frame or series
        images = images.to_numpy()
    try:
        array = np.asarray(images)
    except ValueError as exc:  # ragged nested lists
        raise ImageInputError(f"{_EXPECTED}; got nested lists of unequal lengths ({exc})") from None
    if array.dtype == object:
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError):
            raise ImageInputError(f"{_EXPECTED}; got values that are not numbers") from None
    if array.shape == IMAGE_SHAPE:
        array = array[np.newaxis]
    if array.ndim != 3 or array.shape[1:] != IMAGE_SHAPE:
        raise ImageInputError(f"{_EXPECTED}; got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ImageInputError(f"{_EXPECTED}; got values that are not numbers (dtype {array.dtype})")
    if array.size == 0:
        return array.astype(np.uint8)
    low, high = array.min(), array.max()
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
        raise ImageInputError(f"{_EXPECTED}; got values from {low} to {high}")
    floats = np.issubdtype(array.dtype, np.floating)
    # a real glyph scaled to 0-1, even one of only 0s and 1s, floats or integers (a raw
    # glyph's darkest pixel is far above 1; a blank image, all 0, passes)
    if 0 < high <= 1:
        raise ImageInputError(
            f"{_EXPECTED}; got values from {low} to {high}, which look scaled to 0-1: "
            "send the raw pixels (multiply by 255 and round)"
        )
    if floats and not np.array_equal(array, np.rint(array)):
        raise ImageInputError(
            f"{_EXPECTED} as whole numbers; got fractional values (e.g. {_first_fraction(array)}): "
            "round them rather than have them truncated"
        )
    return array.astype(np.uint8)


def _first_fraction(array: np.ndarray) -> float:
    flat = array.reshape(-1)
    return float(flat[np.flatnonzero(flat != np.rint(flat))[0]])


class LetterClassifier(PythonModel):
    """Raw 28x28 pixels in, 10 letter probabilities (A-J) out, input checked first.

    `keras_model` is the trained network itself (for evaluation code that wants Keras):
    `mlflow.pyfunc.load_model(uri).unwrap_python_model().keras_model`, or `load_keras(uri)`.
    """

    keras_model: Any = None

    def load_context(self, context: PythonModelContext) -> None:
        import keras

        self.keras_model = keras.saving.load_model(context.artifacts[KERAS_FILE_KEY], compile=False)

    # `np.ndarray`, a hint MLflow infers nothing from, leaves the input (an array or nested
    # lists, as `check_images` takes) to this method's checks. No progress bar per call.
    def predict(
        self,
        context: PythonModelContext | None,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        pixels = check_images(model_input)
        if not len(pixels):
            return np.zeros((0, 10), dtype=np.float32)
        return np.asarray(self.keras_model.predict(pixels, batch_size=_BATCH, verbose=0))


def _signature(files: ModelFiles) -> Any:
    """Images (float64, as JSON numbers arrive) in, probabilities out.

    MLflow enforces a tensor signature by exact dtype, so uint8, int64 or float32 arrays
    would be refused, with an error that opens with a dump of the array. Marking the
    signature as one MLflow does not enforce (as it marks those of type-hinted models) leaves
    the checking to `LetterClassifier.predict`, which accepts every exact form of the pixels
    and says what was expected when it refuses; the scoring server then passes the JSON
    through as it came. The signature still documents the input and output for users.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, *IMAGE_SHAPE))]),
        outputs=Schema([TensorSpec(np.dtype(files.output_dtype), (-1, files.classes))]),
    )
    signature._is_signature_from_type_hint = True
    return signature


class _PyfuncUnchecked:
    """`mlflow.pyfunc` as the flavor of `Model.log`, minus the serving check of the input
    example: that check loads the model, hence TensorFlow (seconds), in the process that
    logs it, and only ever warns. `LetterClassifier` on this example is what the trainer ran
    to make `ModelFiles` (and the test suite serves the logged model)."""

    __name__ = "mlflow.pyfunc"

    @staticmethod
    def save_model(path: str, mlflow_model: Any, validate_serving_input: bool, **kw: Any) -> None:
        mlflow.pyfunc.save_model(path=path, mlflow_model=mlflow_model, **kw)


def log_model_files(files: ModelFiles, name: str = Artifact.MODEL_NAME) -> str:
    """Log a model saved by `save_model_files` as a self-contained `LetterClassifier` (the
    native .keras file, this package's code, pinned requirements, signature and input
    example), then delete the files; returns its `models:/` URI for
    `mlflow.pyfunc.load_model` or `mlflow models serve`. Needs no Keras."""
    import pipeline

    folder = Path(files.folder)
    try:
        # The wrapper's code travels with the model, so any process with the requirements
        # loads it, without this package installed (`code/pipeline/` in the model).
        code = folder / "pipeline"
        shutil.copytree(
            Path(pipeline.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__")
        )
        info = Model.log(
            artifact_path=None,
            name=name,
            flavor=_PyfuncUnchecked,
            flavor_name="python_function",
            validate_serving_input=False,
            python_model=str(Path(__file__).with_name("letter_model.py")),
            artifacts={KERAS_FILE_KEY: files.keras_file},
            code_paths=[str(code)],
            signature=_signature(files),
            input_example=np.asarray(files.example, dtype=np.float64),
            pip_requirements=files.requirements,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return str(info.model_uri)


def log_keras_model(model: Any, input_example: Any, name: str = Artifact.MODEL_NAME) -> str:
    """`log_model_files` of a Keras model, in one process (for library use and benchmarks)."""
    return log_model_files(save_model_files(model, input_example), name)


def load_keras(model_uri: str) -> Any:
    """The Keras network of a model this pipeline logged (any URI MLflow accepts), read as
    data: the model's files are downloaded, its MLmodel and network file checked
    (`model_files.network_file`) and the network loaded by Keras in safe mode. Nothing the
    model carries is run, unlike `mlflow.pyfunc.load_model`, which runs the model's own code
    (its python_model file), so that an account that can write to a run cannot make the
    machines that predict with it run code."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pipeline-load-") as folder:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
        try:
            return load_network(network_file(local))
        except ModelFileError as exc:  # named by the model, not by the temporary folder
            raise ModelFileError(f"{model_uri}: {exc}") from None


def load_classifier(model_uri: str) -> LetterClassifier:
    """`load_keras` as a `LetterClassifier`: its `predict` checks the images first, as the
    logged model's does when MLflow serves it."""
    classifier = LetterClassifier()
    classifier.keras_model = load_keras(model_uri)
    return classifier
