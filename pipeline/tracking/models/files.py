"""A trained network as files for `models.log_model_files`: made by the process that trained
it (it needs Keras), logged by the one that records the run (it needs MLflow)."""

from __future__ import annotations

import contextlib
import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from pipeline.errors import ModelError

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


class ModelFileError(ModelError):
    """A model's files are not those of a network this pipeline logged: refused unloaded."""


# What a model read back from the store may hold, and no more: its MLmodel names the network's
# file, and that file's config holds only the layers `pipeline.stages.model.build_model` makes.
# The model's own code (its python_model file, its copy of this package) is never run here.
_LOADER = "mlflow.pyfunc.loaders.code_model"
_LAYERS = frozenset(
    {"InputLayer", "Rescaling", "Reshape", "RandomTranslation", "RandomRotation", "RandomZoom"}
    | {"Flatten", "Dense", "Dropout"}
)
# unpacked size of a network file: [2048, 2048] is 26 MB; a few GB would be a zip bomb
MAX_NETWORK_BYTES = 1 << 30


def network_file(model_dir: Path) -> Path:
    """The `.keras` file of a downloaded model folder, after checking its MLmodel (plain
    YAML, read as data) says it is a `LetterClassifier` whose network is a file inside the
    folder, and the file's config holds only `build_model`'s layers."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    try:
        meta: Any = yaml.safe_load(mlmodel.read_text()) if mlmodel.stat().st_size < 1 << 20 else {}
        flavor = meta["flavors"]["python_function"]
        loader, relative = flavor["loader_module"], flavor["artifacts"][KERAS_FILE_KEY]["path"]
    except (OSError, TypeError, KeyError, yaml.YAMLError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else exc
        raise ModelFileError(f"MLmodel: not the MLmodel of a letter classifier ({why})") from None
    if loader != _LOADER or not isinstance(relative, str):
        raise ModelFileError(
            f"MLmodel: loader {loader!r}, not a letter classifier logged by this pipeline"
        )
    parts = PurePosixPath(relative).parts
    if PurePosixPath(relative).is_absolute() or ".." in parts or not relative.endswith(".keras"):
        raise ModelFileError(f"MLmodel: its network path {relative!r} leaves the model")
    keras_file = model_dir.joinpath(*parts)
    if keras_file.is_symlink() or not keras_file.is_file():
        raise ModelFileError(f"{relative}: the model's network is not a regular file")
    _check_network(keras_file, relative)
    return keras_file


def _check_network(keras_file: Path, shown: str) -> None:
    try:
        with zipfile.ZipFile(keras_file) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
            if unpacked > MAX_NETWORK_BYTES:
                raise ModelFileError(
                    f"{shown}: unpacks to {unpacked:,} bytes, more than a network of this "
                    f"pipeline's ({MAX_NETWORK_BYTES:,}); refused"
                )
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(exc, ModelFileError):
            raise
        why = exc.strerror if isinstance(exc, OSError) else exc
        raise ModelFileError(f"{shown}: not a readable Keras model ({why})") from None
    layers = config.get("config", {}).get("layers") if isinstance(config, dict) else None
    if config.get("class_name") != "Functional" or not isinstance(layers, list):
        raise ModelFileError(f"{shown}: not a functional Keras model")
    kinds = {str(layer.get("class_name")) for layer in layers if isinstance(layer, dict)}
    if len(kinds) == 0 or kinds - _LAYERS:
        odd = ", ".join(sorted(kinds - _LAYERS)) or "none"
        raise ModelFileError(f"{shown}: layers {odd} are not ones this pipeline builds")


def load_network(keras_file: Path) -> Any:
    """The network of a checked `.keras` file, by Keras in safe mode (no lambdas, no
    classes outside Keras), uncompiled."""
    import keras

    return keras.saving.load_model(keras_file, compile=False, safe_mode=True)
