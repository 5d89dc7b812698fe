"""The app runs when installed: a wheel, a fresh virtual environment, an unrelated folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

_OFFLINE = ("-q", "--no-deps", "--no-index")
_WHERE = "import pipeline.config as c; print(c.__file__, c.config_dir())"
_ONE_EPOCH = (
    *("data.train_size=300", "data.valid_size=100", "data.test_size=100"),
    *("model.hidden_units=[16]", "train.epochs=1", "train.verbose=0"),
)


def _build_wheel(out: Path) -> Path:
    """Build from a copy of the sources (a build in the checkout would leave build/ there),
    offline, with the setuptools of this environment."""
    src = out / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PROJECT_ROOT / name, src)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pipeline", "conf"):
        shutil.copytree(PROJECT_ROOT / name, src / name, ignore=ignore)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            *_OFFLINE,
            "--no-build-isolation",
            "-w",
            str(out / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (out / "dist").glob("notmnist_pipeline-*.whl")
    return wheel


def _fresh_venv(root: Path, wheel: Path) -> Path:
    """A new venv holding the wheel, installed non-editable. Its third-party dependencies
    are this environment's (a path entry, not a second 2 GB install); the editable install of
    the checkout is not visible there, since only the plain folder is added, not its .pth
    files."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "_shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", *_OFFLINE, str(wheel)],
        check=True,
        capture_output=True,
    )
    return root / "bin"


def test_wheel_installs_and_trains_from_an_unrelated_folder(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "pipeline/conf/config.yaml" in names
    assert "pipeline/conf/experiment/best.yaml" in names

    bin_dir = _fresh_venv(tmp_path / "venv", wheel)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"MLFLOW_TRACKING_URI", "PIPELINE_CACHE_DIR", "PIPELINE_HOME", "PYTHONPATH"}
    }
    where = subprocess.run(
        [
            bin_dir / "python",
            "-c",
            "import pipeline.config as c; print(c.__file__, c.config_dir())",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(tmp_path / "venv") in where  # the installed copy, not the checkout
    assert str(PROJECT_ROOT) not in where

    done = subprocess.run(
        [bin_dir / "notmnist", *_ONE_EPOCH],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    store = work / "mlruns" / "mlflow.db"
    assert store.is_file()  # the installed app's store is ./mlruns of its working folder
    assert (work / ".cache" / "data").is_dir()
    (run,) = MlflowClient(f"sqlite:///{store}").search_runs(["1"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["epochs_run"] == 1
    assert "mlflow.source.git.commit" not in run.data.tags  # not run from a checkout

    module = subprocess.run(
        [bin_dir / "python", "-m", "pipeline", "--cfg", "job", "model=logreg"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert module.returncode == 0, module.stderr[-2000:]
    assert "hidden_units: []" in module.stdout
