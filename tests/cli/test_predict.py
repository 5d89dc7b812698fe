"""`python -m pipeline.predict` as a user runs it: counts, skipped files with reasons, the CSV,
one-line errors, and nothing left in the folder it ran from."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT
from models_fixture import BAD_FILES, Champion, letters, write_sources


def _predict(cwd: Path, *args: str, env: dict[str, str] | None = None):
    """From `cwd` (not the checkout), with the checkout's package on the path."""
    import os

    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "pipeline.predict", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_predict_a_tar_gz_lists_bad_files_and_writes_the_csv(
    champion: Champion, tmp_path: Path
) -> None:
    images, _ = letters(30, seed=11)
    tar = write_sources(tmp_path / "in", images)["tar"]
    work = tmp_path / "work"
    work.mkdir()
    result = _predict(
        work, f"model=models:/{champion.name}@champion", f"input={tar}", env=champion.env()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Read 30 images, skipped {len(BAD_FILES)}; predictions in predictions.csv" in (
        result.stdout
    )
    for name, said in BAD_FILES.items():
        assert f"skipped top/{name}: " in result.stderr
        assert said in result.stderr
    with (work / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30
    assert rows[0]["file"] == "top/scans/batch_0/000.png"
    assert {r["letter"] for r in rows} <= set("ABCDEFGHIJ")
    assert all(0.1 <= float(r["probability"]) <= 1 for r in rows)
    assert sorted(p.name for p in work.iterdir()) == ["predictions.csv"]  # no log, no .hydra
    # no progress bars: Keras' per-call bar, MLflow's artifact download bar
    assert "━" not in result.stdout + result.stderr
    assert "Downloading artifacts" not in result.stderr


def test_missing_keys_and_inputs_are_one_line_errors(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result = _predict(work, "input=x.png")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("config error: model=<URI> is required")
    result = _predict(work, "model=m", "input=x.png", "ouptut=p.csv")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "config error: unknown key 'ouptut': the config has "
        "batch_size, convert, input, model, output, tracking_uri"
    )
    result = _predict(work, "model=models:/notmnist@champion", f"input={tmp_path / 'nope'}")
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"data error: input={tmp_path / 'nope'} does not exist"
    )
    assert sorted(p.name for p in work.iterdir()) == []


@pytest.mark.slow
def test_a_model_uri_that_does_not_resolve_is_a_one_line_error(
    champion: Champion, tmp_path: Path
) -> None:
    png = write_sources(tmp_path / "in", letters(10)[0])["png"]
    result = _predict(tmp_path, "model=models:/notmnist@nobody", f"input={png}", env=champion.env())
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("model error: model=models:/notmnist@nobody: ")
    assert "nobody" in last.split(": ", 2)[2]
