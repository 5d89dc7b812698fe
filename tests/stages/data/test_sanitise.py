"""Split sizes, duplicate removal and near-duplicate distances."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.stages.data import DataError
from pipeline.stages.data.sanitise import resolve_sizes, sanitised_split, unique_images


def test_fractions_lose_no_image() -> None:
    assert resolve_sizes((0.8, 0.1, 0.1), 6876) == (5502, 687, 687)
    assert resolve_sizes((0.5, 0.1, 0.1), 1000) == (500, 100, 100)  # the rest left unused
    assert resolve_sizes((5000, 0.1, 0.1), 6876) == (5000, 687, 687)


def test_sizes_beyond_the_pool() -> None:
    with pytest.raises(DataError, match="train=900, valid=50, test=50 need 1000"):
        resolve_sizes((900, 50, 50), 60)
    with pytest.raises(DataError, match="leave a split empty"):
        resolve_sizes((0.9, 0.1, 0.001), 100)


def test_unique_images_keeps_first_copies_and_drops_ambiguous_ones() -> None:
    images = np.zeros((6, 2, 2), np.uint8)
    images[1, 0, 0] = images[3, 0, 0] = 1  # 1 and 3 are copies, same letter
    images[2, 0, 0] = images[4, 0, 0] = 2  # 2 and 4 are copies, different letters
    images[5, 0, 0] = 3
    kept, copies, conflicting = unique_images(images, np.array([0, 1, 2, 1, 5, 6]))
    assert kept.tolist() == [0, 1, 5]
    assert (copies, conflicting) == (1, 2)


def test_near_duplicate_distance_is_rms_in_pixel_levels() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    near = base.copy()
    near[:, :, :4] = np.clip(near[:, :, :4].astype(int) + 10, 0, 255).astype(np.uint8)
    images = np.concatenate([base, near])
    labels = np.tile(np.arange(10), 8).astype(np.uint8)
    # the nudge moves 4 of 28 columns by <= 10 levels: RMS distance <= 10 * sqrt(4 / 28) ~ 3.8
    loose = sanitised_split(images, labels, (40, 20, 20), seed=0, near_duplicate_rmsd=4.0)
    strict = sanitised_split(images, labels, (40, 20, 20), seed=0, near_duplicate_rmsd=1.0)
    assert sum(loose.near_duplicates_removed.values()) > 0
    assert strict.near_duplicates_removed == {"valid": 0, "test": 0}


def test_not_in_drops_every_copy_of_a_reference_image_whatever_its_label() -> None:
    from pipeline.stages.data.sanitise import not_in

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 28, 28), dtype=np.uint8)
    images[5] = images[2]  # a second copy of a reference image
    reference = np.stack([images[2], images[7], rng.integers(0, 256, (28, 28), dtype=np.uint8)])
    assert not_in(images, reference).tolist() == [0, 1, 3, 4, 6]
    assert not_in(images, reference[:0]).tolist() == list(range(8))


def _distinct(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def test_splits_too_small_to_stratify_are_one_line_data_errors() -> None:
    """scikit-learn's ValueErrors (a traceback before) become DataErrors naming the sizes
    and what to change."""
    three_each = np.repeat(np.arange(10), 3).astype(np.uint8)
    with pytest.raises(
        DataError,
        match=r"^split sizes train=24, valid=3, test=3 of 30 images: after train=24, 6 images "
        r"are left \(valid and test\), fewer than the 10 letters, .*give valid and test at "
        r"least 10 images each",
    ):
        sanitised_split(_distinct(30), three_each, (0.8, 0.1, 0.1), seed=0)
    # the sample's 6,876 distinct images at 0.9/0.09/0.009 leave 9 out: fewer than 10 letters
    labels = np.arange(6876).astype(np.uint8) % 10
    with pytest.raises(
        DataError,
        match=r"train=6188, valid=618, test=61 of 6876 images: after test=61, 9 images are left "
        r"\(9 unused\), .*make the sizes add up to all 6876 images .* or leave at least 10",
    ):
        sanitised_split(_distinct(6876), labels, (0.9, 0.09, 0.009), seed=0)
    with pytest.raises(DataError, match=r"valid=5 is fewer than the 10 letters.*data.valid_size"):
        sanitised_split(_distinct(60), np.arange(60).astype(np.uint8) % 10, (30, 5, 25), seed=0)
    one_j = np.r_[np.arange(59) % 9, 9].astype(np.uint8)
    with pytest.raises(DataError, match=r"only 1 image of J is left for train.*add images of J"):
        sanitised_split(_distinct(60), one_j, (30, 10, 10), seed=0)


def test_near_duplicate_distance_that_empties_a_split_names_the_setting() -> None:
    """data.near_duplicate_rmsd=1e9 removed every valid and test image (before: empty splits,
    which failed later as a 'tracking error')."""
    labels = np.arange(80).astype(np.uint8) % 10
    with pytest.raises(
        DataError,
        match=r"^data.near_duplicate_rmsd=1e\+09 empties the valid split: it removed 20 of 20 "
        r"valid and 20 of 20 test images as near duplicates; lower it",
    ):
        sanitised_split(_distinct(80), labels, (40, 20, 20), seed=0, near_duplicate_rmsd=1e9)
