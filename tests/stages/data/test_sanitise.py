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
