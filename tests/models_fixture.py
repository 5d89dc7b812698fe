"""A registered model shared by the prediction, serving and reproduction tests.

One small training run (`python -m pipeline`, in a subprocess so that this process's MLflow
state is untouched) in its own store, registered with plain MLflow calls as version 1 of
`notmnist` with the alias `champion`. tests/conftest.py imports the fixture, so that every
module shares the one session-scoped instance.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# Ten epochs of Adam on the tiny synthetic set (with conftest.TINY): good enough that right
# letters are checkable.
TRAIN = (
    "model.hidden_units=[64]",
    "train.epochs=10",
    "train.optimizer=adam",
    "train.learning_rate=0.003",
)
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf")

_REGISTER = """
import mlflow, sys
from mlflow.tracking import MlflowClient
version = mlflow.register_model(sys.argv[1], "notmnist")
MlflowClient().set_registered_model_alias("notmnist", "champion", version.version)
print(version.version)
"""


@dataclass(frozen=True)
class Champion:
    store_uri: str
    run_id: str
    model_uri: str  # models:/m-...
    version: str
    test_accuracy: float
    name: str = "notmnist"

    def env(self) -> dict[str, str]:
        """The environment of a command that finds this model in its store."""
        return {**os.environ, "MLFLOW_TRACKING_URI": self.store_uri}


def letters(n: int = 60, seed: int = 321) -> tuple[np.ndarray, np.ndarray]:
    """Fresh synthetic letters (uint8 (n, 28, 28), labels), none of them seen in training."""
    from conftest import rendered  # (conftest imports this module)

    return rendered(n, seed=seed, fonts=list(FONTS))


@pytest.fixture(scope="session")
def champion(tmp_path_factory: pytest.TempPathFactory, _empty_store: Path) -> Champion:
    from conftest import TINY, cli  # (conftest imports this module)

    folder = tmp_path_factory.mktemp("champion")
    db = folder / "mlflow.db"
    shutil.copyfile(_empty_store, db)
    uri = f"sqlite:///{db}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PIPELINE_CACHE_DIR": str(folder / "cache")}
    settings = (*TINY, *TRAIN, "tracking.experiment=champion", f"hydra.run.dir={folder}")
    trained = cli(*settings, env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("champion").experiment_id])
    [logged] = client.search_logged_models([run.info.experiment_id])
    model_uri = f"models:/{logged.model_id}"
    version = register_champion(model_uri, env)
    return Champion(uri, run.info.run_id, model_uri, version, run.data.metrics["test_accuracy"])


def register_champion(model_uri: str, env: dict[str, str]) -> str:
    """Register the model as the next version of `notmnist` with the alias `champion`, with
    plain MLflow calls in a subprocess (the store is env's MLFLOW_TRACKING_URI)."""
    registered = subprocess.run(
        [sys.executable, "-c", _REGISTER, model_uri],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert registered.returncode == 0, registered.stderr[-3000:]
    return registered.stdout.split()[-1]


# Files predict must list and skip, with the reason it gives for each.
BAD_FILES = {"empty.png": "empty file", "notes.txt": "not an image", "big.png": "32x32 RGB"}


def write_sources(folder: Path, images: np.ndarray) -> dict[str, Path]:
    """The same images as a folder of PNGs in sub-folders, a tar.gz of them, an IDX file and
    (the first) a single PNG; the folder and archive also hold BAD_FILES."""
    from make_sources import png, write_idx, write_tar

    good = {f"scans/batch_{i // 25}/{i:03d}.png": png(image) for i, image in enumerate(images)}
    bad = {
        "empty.png": b"",
        "notes.txt": b"letters to read\n",
        "big.png": png(np.full((32, 32), 200, dtype=np.uint8), mode="RGB"),
    }
    root = folder / "pngs"
    for name, data in {**good, **bad}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    single = folder / "one.png"
    single.write_bytes(good["scans/batch_0/000.png"])
    return {
        "folder": root,
        "tar": write_tar(
            folder / "letters.tar.gz", {f"top/{k}": v for k, v in {**good, **bad}.items()}
        ),
        "idx": write_idx(folder / "idx", images, np.zeros(len(images), dtype=np.uint8)),
        "png": single,
    }
