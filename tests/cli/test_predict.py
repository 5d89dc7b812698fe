"""`python -m pipeline.predict` as a user runs it: counts, skipped files with reasons, the CSV,
one-line errors, and nothing left in the folder it ran from."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT, assert_quiet
from models_fixture import BAD_FILES, Champion, letters, write_sources


def _predict(cwd: Path, *args: str, env: dict[str, str] | None = None):
    """From `cwd` (not the checkout), with the checkout's package on the path."""
    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "predict", *args],
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
    written = Path("outputs") / "predictions" / "letters.csv"  # outputs/ is git-ignored
    assert f"Read 30 images, skipped {len(BAD_FILES)}; predictions in {written}" in result.stdout
    for name, said in BAD_FILES.items():
        assert f"skipped top/{name}: " in result.stderr
        assert said in result.stderr
    with (work / written).open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 30
    assert rows[0]["file"] == "top/scans/batch_0/000.png"
    assert {r["letter"] for r in rows} <= set("ABCDEFGHIJ")
    assert all(0.1 <= float(r["probability"]) <= 1 for r in rows)
    assert sorted(p.name for p in work.iterdir()) == ["outputs"]  # no log, no .hydra
    # no progress bars (Keras' per-call bar, MLflow's artifact download bar), no C++ notices
    assert "━" not in result.stdout + result.stderr
    assert_quiet(result)


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
        "batch_size, convert, input, max_member_bytes, max_total_bytes, model, output, "
        "tracking_uri"
    )
    result = _predict(work, "model=models:/notmnist@champion", f"input={tmp_path / 'nope'}")
    assert result.returncode == 1
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"data error: input={tmp_path / 'nope'} does not exist"
    )
    assert sorted(p.name for p in work.iterdir()) == []


@pytest.mark.slow
def test_an_input_that_is_not_an_image_file_fails_in_one_line_before_the_model(
    tmp_path: Path,
) -> None:
    """A FIFO (before: waited forever), a link to /dev/zero (before: a MemoryError traceback)
    and a 3 GB file (before: read whole): one line, exit code 1, before any model is looked
    up (there is none here)."""
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    with (tmp_path / "big.png").open("wb") as handle:
        handle.truncate(3_000_000_000)  # sparse: takes no disk
    said = {
        "fifo.png": "is a FIFO (named pipe), not a regular file; refused",
        "zero.png": "is a character device (a link to /dev/zero), not a regular file; refused",
        "big.png": "is 3,000,000,000 bytes, over the limit of 67,108,864 bytes for one image",
    }
    for name, message in said.items():
        result = _predict(tmp_path, "model=models:/none@champion", f"input={tmp_path / name}")
        assert result.returncode == 1, result.stderr[-2000:]
        assert (
            result.stderr.strip()
            .splitlines()[-1]
            .startswith(f"data error: input={tmp_path / name} {message}")
        )
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_no_readable_image_exits_1_listing_the_skipped_files(
    champion: Champion, tmp_path: Path
) -> None:
    """Before: 'Read 0 images', exit code 0."""
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("letters to read")
    result = _predict(
        tmp_path, f"model=models:/{champion.name}@champion", f"input={folder}", env=champion.env()
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-3:] == [
        "skipped empty.png: empty file",
        "skipped notes.txt: not an image Pillow can identify",
        f"data error: input={folder} holds no readable image (2 files skipped)",
    ]
    assert not (tmp_path / "predictions.csv").exists()


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
