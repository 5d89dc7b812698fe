"""Prediction over every input form: same images, same letters; bad files listed, not fatal;
any model URI MLflow accepts."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import numpy as np
import pytest
from models_fixture import BAD_FILES, Champion, letters, write_sources

from pipeline.jobs.prediction import load_model, predict_files, read_images
from pipeline.tracking.models import load_keras


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
