"""The logged model's input check: every exact form of 0-255 pixels passes, anything else is
refused with a first line that says what was expected (never a dump of the array)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from pipeline.tracking.models.classifier import check_images

PIXELS = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28)).astype(np.uint8)
EXPECTED = "expected images of shape (n, 28, 28)"


@pytest.mark.parametrize(
    "images",
    [
        PIXELS,
        PIXELS.astype(np.int64),
        PIXELS.astype(np.int32),
        PIXELS.astype(np.float32),
        PIXELS.astype(np.float64),
        list(PIXELS),  # a list of 28x28 arrays
        PIXELS.tolist(),  # JSON integers
        PIXELS.astype(float).tolist(),  # JSON floats
    ],
    ids=["uint8", "int64", "int32", "float32", "float64", "list", "json-int", "json-float"],
)
def test_pixels_0_255_in_any_exact_form_pass_unchanged(images) -> None:
    checked = check_images(images)
    assert checked.dtype == np.uint8
    np.testing.assert_array_equal(checked, PIXELS)


def test_one_image_is_a_batch_of_one() -> None:
    assert check_images(PIXELS[0]).shape == (1, 28, 28)
    assert check_images(np.zeros((28, 28), dtype=np.int64)).shape == (1, 28, 28)  # blank


def _refusal(images) -> str:
    with pytest.raises(MlflowException) as caught:
        check_images(images)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"  # HTTP 400 when served
    first = caught.value.message.splitlines()[0]
    assert first.startswith(EXPECTED)
    assert "[[" not in caught.value.message  # no array dump
    return first


@pytest.mark.parametrize(
    ("images", "said"),
    [
        (PIXELS / 255.0, "look scaled to 0-1"),
        ((PIXELS > 127).astype(float), "look scaled to 0-1"),  # 0.0 and 1.0 only: still scaled
        ((PIXELS > 127).astype(np.int64), "look scaled to 0-1"),  # integers 0 and 1 likewise
        (PIXELS.astype(float) * 0.999 + 0.1, "whole numbers"),  # fractions, not truncated
        (PIXELS.astype(float) + 300, "got values from 300.0"),
        (PIXELS.astype(np.int64) - 1, "got values from -1"),
        (PIXELS.reshape(3, 784), "got shape (3, 784)"),
        (PIXELS[:, :14], "got shape (3, 14, 28)"),
        ([PIXELS[0], PIXELS[0, :14]], "unequal lengths"),
        ([[["a"] * 28] * 28], "not numbers"),
        (np.full((1, 28, 28), np.nan), "got values from nan"),
    ],
    ids=[
        *("scaled", "scaled-binary", "int-binary", "fractional", "above", "below"),
        *("flat", "cropped", "ragged", "text", "nan"),
    ],
)
def test_bad_input_is_refused_with_what_was_expected_first(images, said: str) -> None:
    first = _refusal(images)
    assert said in first
    assert "0-255" in first


def test_the_scoring_servers_rewrite_cannot_push_a_dump_in_front() -> None:
    """The server sets `message = f"Failed to predict data '{data}'. Error: {message}"`."""
    with pytest.raises(MlflowException) as caught:
        check_images(PIXELS / 255.0)
    error = caught.value
    original = error.message
    error.message = f"Failed to predict data '{PIXELS.tolist()}'. \nError: {error.message}"
    assert error.message == original
    assert error.serialize_as_json().startswith('{"error_code": "INVALID_PARAMETER_VALUE"')


# --- loading a model back: its files are data, never code ---------------------------------


@pytest.fixture(scope="module")
def logged_folder(tmp_path_factory: pytest.TempPathFactory):
    """A model folder as MLflow downloads it: MLmodel and the network's .keras file."""
    import yaml
    from conftest import new_model

    from pipeline.tracking.models.files import save_model_files

    files = save_model_files(new_model(hidden_units=(8,), dropout_rate=0.5, l2_beta=0.0), PIXELS)
    folder = tmp_path_factory.mktemp("model")
    (folder / "artifacts").mkdir()
    (folder / "artifacts" / "model.keras").write_bytes(Path(files.keras_file).read_bytes())
    meta = {
        "flavors": {
            "python_function": {
                "loader_module": "mlflow.pyfunc.loaders.code_model",
                "artifacts": {"keras_model": {"path": "artifacts/model.keras"}},
            }
        }
    }
    (folder / "MLmodel").write_text(yaml.safe_dump(meta))
    return folder, meta


def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_a_logged_network_loads_as_data(logged_folder) -> None:
    from pipeline.tracking.models.files import load_network, network_file

    folder, _ = logged_folder
    network = load_network(network_file(folder))
    assert network.predict(PIXELS, verbose=0).shape == (3, 10)


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"loader_module": "mlflow.pyfunc.model"}, "not a letter classifier"),
        ({"artifacts": {"keras_model": {"path": "../../etc/model.keras"}}}, "leaves the model"),
        ({"artifacts": {"keras_model": {"path": "/etc/model.keras"}}}, "leaves the model"),
        ({"artifacts": {}}, "not the MLmodel of a letter classifier"),
    ],
)
def test_a_rewritten_mlmodel_is_refused(logged_folder, tmp_path: Path, change, said) -> None:
    import yaml

    from pipeline.tracking.models.files import ModelFileError, network_file

    folder, meta = logged_folder
    copy = _copy(folder, tmp_path)
    flavor = {**meta["flavors"]["python_function"], **change}
    (copy / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": flavor}}))
    with pytest.raises(ModelFileError, match=said):
        network_file(copy)


def test_a_network_with_other_layers_or_a_bomb_is_refused(
    logged_folder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import zipfile

    from pipeline.tracking.models import files as model_files
    from pipeline.tracking.models.files import ModelFileError, network_file

    folder, _ = logged_folder
    copy = _copy(folder, tmp_path)
    keras_file = copy / "artifacts" / "model.keras"
    with zipfile.ZipFile(keras_file) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"][-1]["class_name"] = "Lambda"  # a layer that runs code
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(keras_file, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ModelFileError, match="layers Lambda are not ones this pipeline builds"):
        network_file(copy)
    bomb = _copy(folder, tmp_path / "bomb")
    with zipfile.ZipFile(bomb / "artifacts" / "model.keras", "a", zipfile.ZIP_DEFLATED) as z:
        real = sum(info.file_size for info in z.infolist())
        z.writestr("padding.bin", b"\0" * 1000)  # compresses to a few bytes
    monkeypatch.setattr(model_files, "MAX_NETWORK_BYTES", real + 999)
    network_file(folder)  # the real network is within the limit
    with pytest.raises(ModelFileError, match="unpacks to"):
        network_file(bomb)


@pytest.mark.slow
def test_loading_a_model_never_runs_the_code_it_carries(tmp_path: Path) -> None:
    """An account that can write to a run rewrites its model's python_model file: predict,
    retrain and serve load the network without running it (MLflow's pyfunc loader would)."""
    from urllib.parse import urlparse

    import mlflow
    from conftest import new_model, settings

    from pipeline.tracking.models.classifier import load_keras, log_keras_model
    from pipeline.tracking.store.connect import open_store

    store = open_store(settings().tracking)
    with mlflow.start_run(experiment_id=store.experiment_id):
        uri = log_keras_model(new_model(hidden_units=(8,), dropout_rate=0.0), PIXELS)
    logged = mlflow.get_logged_model(uri.removeprefix("models:/"))
    location = Path(urlparse(logged.artifact_location).path)
    marker = tmp_path / "owned"
    planted = location / "letter_model.py"
    planted.write_text(f"open({str(marker)!r}, 'w').close()\n" + planted.read_text())
    network = load_keras(uri)
    assert network.predict(PIXELS, verbose=0).shape == (3, 10)
    assert not marker.exists()
