"""Prediction over every input form: same images, same letters; bad files listed, not fatal;
any model URI MLflow accepts."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
from models_fixture import BAD_FILES, Champion, letters, write_sources

from pipeline.jobs.prediction import (
    NoImagesError,
    input_format,
    load_model,
    predict_files,
    read_images,
)
from pipeline.stages.data import DataError
from pipeline.tracking.models.classifier import load_keras


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, dict[str, Path]]:
    images, _ = letters(60, seed=5)
    return images, write_sources(tmp_path_factory.mktemp("inputs"), images)


def test_every_form_reads_the_same_pixels_and_lists_the_bad_files(sources) -> None:
    images, paths = sources
    folder, tar, idx = (read_images(paths[k]) for k in ("folder", "tar", "idx"))
    for read in (folder, tar, idx):
        np.testing.assert_array_equal(read.pixels, images)
    assert folder.names[:2] == ["scans/batch_0/000.png", "scans/batch_0/001.png"]
    assert tar.names[0] == "top/scans/batch_0/000.png"
    assert idx.names[:2] == ["0", "1"]
    assert idx.skipped == []
    for read, prefix in ((folder, ""), (tar, "top/")):
        reasons = dict(read.skipped)
        assert set(reasons) == {prefix + name for name in BAD_FILES}
        for name, said in BAD_FILES.items():
            assert said in reasons[prefix + name]
    single = read_images(paths["png"])
    assert single.names == ["one.png"]
    np.testing.assert_array_equal(single.pixels, images[:1])


def test_inputs_that_are_not_regular_files_are_refused_unread(tmp_path: Path) -> None:
    """A FIFO (before: open() waited forever for a writer) and a .png link to /dev/zero
    (before: read until MemoryError at 6 GB) are one-line data errors, said by input_format,
    which the command calls before it loads the model, and by read_images."""
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")
    said = {
        fifo: f"input={fifo} is a FIFO (named pipe), not a regular file; refused",
        zero: f"input={zero} is a character device (a link to /dev/zero), not a regular file; "
        "refused",
    }
    for path, message in said.items():
        for call in (input_format, read_images):
            with pytest.raises(DataError) as error:
                call(path)
            assert str(error.value) == message


def test_an_image_over_the_member_cap_is_refused_from_its_size(tmp_path: Path) -> None:
    """Sized with stat, before reading (before: a 3 GB file was read whole, 3.8 GB)."""
    big = tmp_path / "big.png"
    with big.open("wb") as handle:
        handle.truncate(3_000_000_000)  # sparse: takes no disk
    message = (
        f"input={big} is 3,000,000,000 bytes, over the limit of 67,108,864 bytes for one image "
        "(max_member_bytes)"
    )
    for call in (input_format, read_images):
        with pytest.raises(DataError) as error:
            call(big)
        assert str(error.value) == message
    small = tmp_path / "small.png"
    small.write_bytes(bytes(2000))
    with pytest.raises(DataError, match="is 2,000 bytes, over the limit of 1,000 bytes"):
        read_images(small, max_member_bytes=1000)


def test_folder_and_archive_inputs_have_the_data_stages_caps(sources) -> None:
    _, paths = sources
    for form in ("folder", "tar"):
        with pytest.raises(DataError, match="over the limit of 100 bytes"):
            read_images(paths[form], max_member_bytes=100)
        with pytest.raises(DataError, match="more than 5,000 bytes, the limit of data.max_total"):
            read_images(paths[form], max_total_bytes=5000)
    with pytest.raises(DataError, match="over the limit of 5,000 bytes"):
        read_images(paths["idx"], max_total_bytes=5000)


def test_no_readable_image_is_a_data_error_listing_the_skipped_files(tmp_path: Path) -> None:
    """Before: 'Read 0 images' and exit code 0."""
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("letters to read")
    with pytest.raises(NoImagesError) as error:
        read_images(folder)
    assert str(error.value) == f"input={folder} holds no readable image (2 files skipped)"
    assert error.value.skipped == [
        ("empty.png", "empty file"),
        ("notes.txt", "not an image Pillow can identify"),
    ]
    with pytest.raises(NoImagesError, match=r"holds no readable image \(1 file skipped\)"):
        read_images(folder / "empty.png")
    (tmp_path / "none").mkdir()
    with pytest.raises(NoImagesError, match=r"holds no readable image \(no file in it\)"):
        read_images(tmp_path / "none")


@pytest.mark.slow
def test_folder_tar_and_idx_give_the_same_letters(sources, champion: Champion, tmp_path) -> None:
    images, paths = sources
    mlflow.set_tracking_uri(champion.store_uri)
    model = load_model(f"models:/{champion.name}@champion")
    rows = {}
    for form in ("folder", "tar", "idx"):
        outcome = predict_files(model, paths[form], tmp_path / f"{form}.csv")
        assert outcome.read == 60
        assert len(outcome.skipped) == (0 if form == "idx" else len(BAD_FILES))
        with (tmp_path / f"{form}.csv").open() as handle:
            rows[form] = list(csv.DictReader(handle))
    assert list(rows["folder"][0]) == ["file", "letter", "probability"]
    assert [r["file"] for r in rows["idx"]] == [str(i) for i in range(60)]
    for key in ("letter", "probability"):
        assert [r[key] for r in rows["folder"]] == [r[key] for r in rows["tar"]]
        assert [r[key] for r in rows["folder"]] == [r[key] for r in rows["idx"]]
    expected = np.asarray(model.predict(None, images))
    assert [r["letter"] for r in rows["idx"]] == ["ABCDEFGHIJ"[i] for i in expected.argmax(1)]
    assert float(rows["idx"][0]["probability"]) == pytest.approx(expected[0].max(), abs=1e-6)


@pytest.mark.slow
def test_any_model_uri_mlflow_accepts(champion: Champion) -> None:
    images, _ = letters(10, seed=9)
    mlflow.set_tracking_uri(champion.store_uri)
    uris = [
        f"runs:/{champion.run_id}/model",
        champion.model_uri,
        f"models:/{champion.name}/{champion.version}",
        f"models:/{champion.name}@champion",
    ]
    outputs = [np.asarray(load_model(uri).predict(None, images)) for uri in uris]
    for output in outputs[1:]:
        np.testing.assert_array_equal(output, outputs[0])
    # the Keras network itself, for evaluation code that wants it
    keras_model = load_keras(f"models:/{champion.name}@champion")
    np.testing.assert_allclose(keras_model.predict(images, verbose=0), outputs[0], atol=1e-6)
