"""Sanitised splits: no image in valid or test that training saw, sizes as configured.

Exact duplicates (same pixels) are collapsed to one copy before splitting, so no split can
share an image with another; copies that disagree on the letter are dropped as ambiguous.
Near duplicates are optional: valid/test images within an RMS pixel distance of a training
(or, for test, a validation) image are removed after splitting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.stages.data.dataset import SPLITS, DataError, stratified_split


@dataclass(frozen=True)
class Sanitised:
    """Index arrays into the pool for train/valid/test, and what was removed on the way."""

    indices: tuple[np.ndarray, np.ndarray, np.ndarray]
    exact_duplicates_removed: int
    conflicting_duplicates_removed: int
    near_duplicates_removed: dict[str, int]


def unique_images(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Indices keeping the first copy of every distinct image, in pool order.

    Returns (kept indices, copies removed, images removed because their copies disagree on
    the letter).
    """
    n = len(images)
    if n == 0:
        return np.arange(0), 0, 0
    rows = np.ascontiguousarray(images.reshape(n, -1))
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    _, first, group, counts = np.unique(
        keys, return_index=True, return_inverse=True, return_counts=True
    )
    group = group.ravel()
    label_min = np.full(len(first), 255, dtype=np.int64)
    label_max = np.zeros(len(first), dtype=np.int64)
    np.minimum.at(label_min, group, labels)
    np.maximum.at(label_max, group, labels)
    conflicting = label_min != label_max
    keep_group = ~conflicting
    kept = np.sort(first[keep_group])
    conflicting_images = int(counts[conflicting].sum())
    removed_copies = int((counts[keep_group] - 1).sum())
    return kept, removed_copies, conflicting_images


def not_in(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Indices of `images` whose pixels equal no image of `reference` (exact match, any
    label): what may be trained on when `reference` is a frozen evaluation set."""
    if len(images) == 0 or len(reference) == 0:
        return np.arange(len(images))
    width = int(np.prod(images.shape[1:]))
    if int(np.prod(reference.shape[1:])) != width or reference.dtype != images.dtype:
        return np.arange(len(images))  # different shapes or dtypes: no image can be equal
    rows = np.ascontiguousarray(images.reshape(len(images), -1))
    refs = np.ascontiguousarray(reference.reshape(len(reference), -1))
    void = np.dtype((np.void, rows.shape[1] * rows.dtype.itemsize))
    seen = np.isin(rows.view(void).ravel(), refs.view(void).ravel())
    return np.flatnonzero(~seen)


def resolve_sizes(sizes: Sequence[float], available: int) -> tuple[int, ...]:
    """Counts from sizes given as counts (>= 1) or fractions of the pool (< 1).

    Fractions are rounded down; when they add up to 1, the images left over go to the
    first split given as a fraction (train, usually), so that none are lost.
    """
    counts = [int(s) if s >= 1 else math.floor(s * available) for s in sizes]
    fractions = [i for i, s in enumerate(sizes) if s < 1]
    if fractions and sum(sizes[i] for i in fractions) > 1 - 1e-9:
        counts[fractions[0]] += max(0, available - sum(counts))
    if sum(counts) > available:
        shown = ", ".join(f"{name}={c}" for name, c in zip(SPLITS, counts, strict=True))
        raise DataError(
            f"split sizes {shown} need {sum(counts)} images but only {available} distinct "
            "images are available; lower data.train_size/valid_size/test_size"
        )
    if min(counts) < 1:
        raise DataError(f"split sizes {list(sizes)} leave a split empty for {available} images")
    return tuple(counts)


def sanitised_split(
    images: np.ndarray,
    labels: np.ndarray,
    sizes: Sequence[float],
    seed: int,
    near_duplicate_rmsd: float | None = None,
) -> Sanitised:
    """Deduplicate, then split stratified by letter; optionally drop near duplicates."""
    kept, copies, conflicting = unique_images(images, labels)
    counts = resolve_sizes(sizes, len(kept))
    parts = [kept[p] for p in stratified_split(labels[kept], counts, seed)]
    near = {"valid": 0, "test": 0}
    if near_duplicate_rmsd is not None:
        train, valid, test = parts
        valid = _drop_near(images, valid, [train], near_duplicate_rmsd)
        test = _drop_near(images, test, [train, valid], near_duplicate_rmsd)
        near = {"valid": len(parts[1]) - len(valid), "test": len(parts[2]) - len(test)}
        for name, left in (("valid", valid), ("test", test)):
            if not len(left):
                raise DataError(
                    f"data.near_duplicate_rmsd={near_duplicate_rmsd:g} empties the {name} split: "
                    f"it removed {near['valid']} of {len(parts[1])} valid and {near['test']} of "
                    f"{len(parts[2])} test images as near duplicates; lower it (an RMS distance "
                    "in 0-255 pixel levels) or set it to null"
                )
        parts = [train, valid, test]
    return Sanitised(tuple(parts), copies, conflicting, near)


def _drop_near(
    images: np.ndarray, candidates: np.ndarray, references: list[np.ndarray], rmsd: float
) -> np.ndarray:
    """Candidates whose RMS pixel difference to every reference image exceeds `rmsd`.

    Squared distances come from |a|^2 + |b|^2 - 2ab, a matrix product, in blocks that keep
    memory bounded (about 130 MB) whatever the number of images.
    """
    flat = images.reshape(len(images), -1)
    ref = np.concatenate(references)
    limit = rmsd**2 * flat.shape[1]
    nearest = np.full(len(candidates), np.inf, dtype=np.float32)
    for c0 in range(0, len(candidates), _BLOCK):
        block = flat[candidates[c0 : c0 + _BLOCK]].astype(np.float32)
        block_sq = (block**2).sum(axis=1)
        for r0 in range(0, len(ref), 8 * _BLOCK):
            rows = flat[ref[r0 : r0 + 8 * _BLOCK]].astype(np.float32)
            dist = block_sq[:, None] + (rows**2).sum(axis=1)[None, :] - 2.0 * block @ rows.T
            nearest[c0 : c0 + _BLOCK] = np.minimum(nearest[c0 : c0 + _BLOCK], dist.min(axis=1))
    return candidates[nearest > limit]


_BLOCK = 2048
