"""What the data stage hands on: raw uint8 images and labels in train/valid/test splits."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline import errors

CLASSES: tuple[str, ...] = tuple("ABCDEFGHIJ")
IMAGE_SIZE = 28
IMAGE_SHAPE: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)
SPLITS: tuple[str, ...] = ("train", "valid", "test")


DataError = errors.DataError  # the data stage's error, where its callers have always found it


@dataclass(frozen=True)
class DataReport:
    """What loading did to the source, for the run's data card."""

    decoded: int = 0
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason) of unreadable images
    converted: tuple[str, ...] = ()  # files converted to 28x28 greyscale (data.convert)
    exact_duplicates_removed: int = 0
    conflicting_duplicates_removed: int = 0
    near_duplicates_removed: dict[str, int] = field(default_factory=dict)
    # source images equal to a holdout image (data.exclude_path); None: no holdout given
    holdout_overlap_removed: int | None = None
    source_digest: str | None = None
    from_cache: bool = False


@dataclass(frozen=True)
class Split:
    """Images as stored (uint8, 0-255, shape (n, 28, 28)) and integer labels (n,).

    Pixels stay raw: normalisation is part of the model, so what a user later feeds the
    logged model is exactly what the data stage produced.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 3:
            raise ValueError(
                f"images must be uint8 (n, h, w), got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.shape != (len(self.images),):
            raise ValueError(
                f"labels shape {self.labels.shape} does not match {len(self.images)} images"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def digest(self) -> str:
        """SHA-256 over every pixel and label (with shapes and dtypes), not a sample of them."""
        return arrays_digest(self.images, self.labels)


def arrays_digest(*arrays: np.ndarray) -> str:
    """SHA-256 over each array's dtype, shape and bytes, in order."""
    h = hashlib.sha256()
    for array in arrays:
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


@dataclass(frozen=True)
class Dataset:
    """Three splits, where they came from, and what loading did (`report`)."""

    train: Split
    valid: Split
    test: Split
    source: str
    format: str
    classes: tuple[str, ...] = CLASSES
    report: DataReport = field(default_factory=DataReport)

    def splits(self) -> Iterator[tuple[str, Split]]:
        return zip(SPLITS, (self.train, self.valid, self.test), strict=True)

    def digests(self) -> dict[str, str]:
        return {name: split.digest() for name, split in self.splits()}

    def digest(self, digests: dict[str, str] | None = None) -> str:
        """One identity for the whole dataset: a hash of the per-split digests, in order
        (`digests()`, where the caller has them)."""
        joined = ",".join(f"{name}:{d}" for name, d in (digests or self.digests()).items())
        return hashlib.sha256(joined.encode()).hexdigest()

    def class_counts(self) -> pd.DataFrame:
        """Images per class (rows A-J) and split (columns), with totals."""
        counts = {
            name: np.bincount(split.labels, minlength=len(self.classes))
            for name, split in self.splits()
        }
        table = pd.DataFrame(counts, index=pd.Index(self.classes, name="class"))
        table["total"] = table.sum(axis=1)
        return table


def stratified_split(labels: np.ndarray, sizes: Sequence[int], seed: int) -> tuple[np.ndarray, ...]:
    """Index arrays for consecutive splits of the given sizes, each with the class mix of the whole.

    Sizes must add up to at most len(labels); the remainder is dropped. Sizes too small for
    a split by class are a DataError that names them and what to change.
    """
    from sklearn.model_selection import train_test_split

    total = sum(sizes)
    if total > len(labels):
        raise ValueError(f"split sizes {list(sizes)} need {total} images, only {len(labels)} exist")
    rest = np.arange(len(labels))
    out = []
    for i, size in enumerate(sizes):
        if size == len(rest):
            take, rest = rest, rest[:0]
        else:
            _check_stratifiable(labels, labels[rest], sizes, i)
            try:
                take, rest = train_test_split(
                    rest, train_size=size, stratify=labels[rest], random_state=(seed + i) % 2**32
                )
            except ValueError as exc:  # a condition _check_stratifiable does not know of
                raise DataError(
                    f"{_sizes(labels, sizes)}: cannot split them by class ({exc})"
                ) from None
        out.append(np.sort(take))
    return tuple(out)


def _check_stratifiable(labels: np.ndarray, rest: np.ndarray, sizes: Sequence[int], i: int) -> None:
    """scikit-learn's conditions for taking split `i` from the `rest` labels by class, said
    in the pipeline's terms: every class present must reach both the split and what is left
    after it, so each side needs an image of each class, and each class two images."""
    names = _split_names(len(sizes))
    classes, counts = np.unique(rest, return_counts=True)
    k, left, later = len(classes), len(rest) - sizes[i], names[i + 1 :]
    unused = left - sum(sizes[i + 1 :])
    shown = _sizes(labels, sizes)
    if sizes[i] < k:
        key = f" (data.{names[i]}_size)" if names == SPLITS else ""
        raise DataError(
            f"{shown}: {names[i]}={sizes[i]} is fewer than the {k} letters, and a split by "
            f"letter gives every split each letter: ask for at least {k}{key}, or more images"
        )
    if left < k:
        where = " and ".join(later) if later else ""
        if unused:
            where = f"{where}, {unused} unused" if where else f"{unused} unused"
        raise DataError(
            f"{shown}: after {names[i]}={sizes[i]}, {left} images are left ({where}), fewer "
            f"than the {k} letters, which a split by letter needs on both sides: "
            + (
                f"make the sizes add up to all {len(labels)} images (fractions adding up "
                f"to 1) or leave at least {k} unused"
                if unused
                else f"give {' and '.join(later)} at least {k} images each, or use more images"
            )
        )
    if counts.min() < 2:
        letter = _class_name(int(classes[counts.argmin()]))
        raise DataError(
            f"{shown}: only 1 image of {letter} is left for {names[i]} and the splits after "
            f"it, and a split by letter gives every split each letter: add images of {letter}"
        )


def _split_names(n: int) -> tuple[str, ...]:
    return SPLITS if n == len(SPLITS) else tuple(f"split {j + 1}" for j in range(n))


def _sizes(labels: np.ndarray, sizes: Sequence[int]) -> str:
    shown = ", ".join(f"{n}={s}" for n, s in zip(_split_names(len(sizes)), sizes, strict=True))
    return f"split sizes {shown} of {len(labels)} images"


def _class_name(label: int) -> str:
    return CLASSES[label] if 0 <= label < len(CLASSES) else str(label)
