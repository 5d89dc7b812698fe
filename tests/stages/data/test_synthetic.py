"""The embedded dataset: deterministic, balanced, raw uint8, split without leaks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rendered, synthetic_args

from pipeline.stages.data import CLASSES, DataError, Split, load_synthetic

FONTS = ("DejaVuSans.ttf", "cmr10.ttf", "STIXGeneralItalic.ttf")


def _load(seed: int = 0, **kw: object):
    args = {"train_size": 200, "valid_size": 50, "test_size": 50, "seed": seed, "fonts": FONTS}
    return load_synthetic(**synthetic_args(**{**args, **kw}))


def test_same_seed_same_bytes() -> None:
    a_images, a_labels = rendered(120, seed=5, fonts=FONTS)
    b_images, b_labels = rendered(120, seed=5, fonts=FONTS)
    assert a_images.tobytes() == b_images.tobytes()
    assert a_labels.tobytes() == b_labels.tobytes()
    c_images, _ = rendered(120, seed=6, fonts=FONTS)
    assert a_images.tobytes() != c_images.tobytes()


def test_images_are_raw_balanced_letters() -> None:
    images, labels = rendered(200, seed=0, fonts=FONTS)
    assert images.shape == (200, 28, 28)
    assert images.dtype == np.uint8
    assert labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [20] * 10
    # glyphs are bright on dark, as in notMNIST: real ink, not just noise
    ink = (images > 128).mean(axis=(1, 2))
    assert ink.min() > 0.03
    assert images.mean() < 128


def test_noise_free_images_differ_only_by_noise() -> None:
    clean, _ = rendered(50, seed=1, fonts=FONTS, noise_std=0.0)
    noisy, _ = rendered(50, seed=1, fonts=FONTS, noise_std=12.0)
    diff = noisy.astype(int) - clean.astype(int)
    assert 5 < np.abs(diff).mean() < 15


def test_unknown_font_names_it() -> None:
    with pytest.raises(DataError, match=r"NoSuchFont\.ttf"):
        rendered(10, seed=0, fonts=("NoSuchFont.ttf",))


def test_splits_have_requested_sizes_and_class_mix() -> None:
    data = _load()
    assert (len(data.train), len(data.valid), len(data.test)) == (200, 50, 50)
    counts = data.class_counts()
    assert list(counts.index) == list(CLASSES)
    assert counts["train"].tolist() == [20] * 10
    assert counts["valid"].tolist() == [5] * 10
    assert counts["total"].sum() == 300


def test_splits_do_not_share_images() -> None:
    data = _load()
    seen = {img.tobytes() for img in data.train.images}
    assert not any(img.tobytes() in seen for img in data.test.images)
    assert not any(img.tobytes() in seen for img in data.valid.images)


def test_digest_covers_every_pixel() -> None:
    data = _load()
    assert data.digest() == _load().digest()
    assert data.digest() != _load(seed=1).digest()
    images = data.test.images.copy()
    images[-1, -1, -1] ^= 1  # one bit of the last pixel of the last image
    changed = Split(images, data.test.labels)
    assert changed.digest() != data.test.digest()


def test_split_rejects_wrong_dtype() -> None:
    with pytest.raises(ValueError, match="uint8"):
        Split(np.zeros((2, 28, 28), np.float32), np.zeros(2, np.uint8))


def test_cached_render_gives_the_same_bytes(tmp_path) -> None:
    first = _load(cache_dir=str(tmp_path))
    second = _load(cache_dir=str(tmp_path))
    assert (first.report.from_cache, second.report.from_cache) == (False, True)
    assert first.digest() == second.digest()
    assert not _load(cache_dir=str(tmp_path), noise_std=11.0).report.from_cache
    assert not _load(cache=False).report.from_cache
