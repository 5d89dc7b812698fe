"""Real notMNIST as a data source: locate, (download,) read, decode, cache, sanitise, split."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.names import SourceFormat
from pipeline.stages.data import sources
from pipeline.stages.data.cache import (
    Pool,
    cache_key,
    cached_pool,
    file_digest,
    folder_digest,
    resolve_cache_dir,
)
from pipeline.stages.data.dataset import (
    CLASSES,
    IMAGE_SHAPE,
    DataError,
    DataReport,
    Dataset,
    Split,
)
from pipeline.stages.data.decode import decode_members
from pipeline.stages.data.download import fetch
from pipeline.stages.data.sanitise import not_in, sanitised_split, unique_images

log = logging.getLogger(__name__)


def load_notmnist(
    *,
    path: str | None,
    format: SourceFormat,
    url: str | None,
    expected_size: int | None,
    sha256: str | None,
    allow_pickle: bool,
    convert: bool,
    train_size: float,
    valid_size: float,
    test_size: float,
    seed: int,
    near_duplicate_rmsd: float | None,
    cache_dir: str | None,
    cache: bool,
    max_member_bytes: int,
    max_total_bytes: int,
    exclude_path: str | None,
    exclude_format: SourceFormat,
) -> Dataset:
    """Splits of real notMNIST from `path` (or a download of `url`). The arguments are
    conf/data/notmnist.yaml's keys, keyword-only with no defaults (the YAML's are the ones).

    `format` is detected unless given (tar, folder, idx, pickle). Sizes are counts (>= 1) or
    fractions of the distinct images. Decoded images are cached under `cache_dir` keyed by the
    source's content, so the next run with the same data skips decoding. An archive member
    or folder file over `max_member_bytes`, or a source unpacking to more than
    `max_total_bytes`, is a DataError naming it, from the cache as from the source.
    """
    folder = resolve_cache_dir(cache_dir)
    if path is None:
        if url is None:
            raise DataError("data=notmnist needs data.path (a file or folder) or data.url")
        source = fetch(url, folder / "downloads", expected_size, sha256)
    else:
        source = Path(path).expanduser()
    fmt, source = locate(source, format)
    digest = _source_digest(fmt, source)
    entry = cache_key([fmt, digest, convert])
    caps = (max_member_bytes, max_total_bytes)

    def read() -> Pool:
        if source.is_dir() or source.stat().st_size >= _ANNOUNCE_BYTES:  # not to look stuck
            log.info("Decoding %s (once: then cached in %s)", source, folder)
        return _read(fmt, source, convert, allow_pickle, caps)

    pool, hit = cached_pool(folder if cache else None, entry, read, _within(caps))
    log.info(
        "Data: %d images from %s (%s%s)", len(pool.labels), source, fmt, ", cached" if hit else ""
    )
    overlap = None
    if exclude_path is not None:
        holdout, _ = load_holdout(
            path=exclude_path,
            format=exclude_format,
            convert=convert,
            allow_pickle=allow_pickle,
            cache_dir=cache_dir,
            max_member_bytes=max_member_bytes,
            max_total_bytes=max_total_bytes,
        )
        keep = not_in(pool.images, holdout.images)
        overlap = len(pool.labels) - len(keep)
        pool = Pool(pool.images[keep], pool.labels[keep], pool.skipped, pool.converted)
        log.info("Data: %d images equal to a holdout image removed before the split", overlap)
    _check_letters(pool.labels, source)
    parts = sanitised_split(
        pool.images, pool.labels, (train_size, valid_size, test_size), seed, near_duplicate_rmsd
    )
    train, valid, test = (Split(pool.images[i], pool.labels[i]) for i in parts.indices)
    return Dataset(
        train,
        valid,
        test,
        source=url if path is None and url else str(source.resolve()),
        format=fmt,
        report=DataReport(
            decoded=len(pool.labels),
            skipped=tuple(pool.skipped),
            converted=tuple(pool.converted),
            exact_duplicates_removed=parts.exact_duplicates_removed,
            conflicting_duplicates_removed=parts.conflicting_duplicates_removed,
            near_duplicates_removed=parts.near_duplicates_removed,
            holdout_overlap_removed=overlap,
            source_digest=digest,
            from_cache=hit,
        ),
    )


# a file from the 7,000-image sample's size up (seconds to decode), or a folder of PNGs
_ANNOUNCE_BYTES = 2_000_000


def source_digest(path: str, format: SourceFormat) -> str:
    """The digest of a source's content (as `DataReport.source_digest`), without reading
    its images: what retraining compares to decide whether the data changed."""
    fmt, source = locate(Path(path).expanduser(), format)
    return _source_digest(fmt, source)


def load_holdout(
    *,
    path: str,
    format: SourceFormat,
    convert: bool,
    allow_pickle: bool,
    cache_dir: str | None,
    max_member_bytes: int,
    max_total_bytes: int,
) -> tuple[Split, str]:
    """Every distinct image of a source as one split (a frozen evaluation set), and the
    source's digest. Exact copies count once; copies that disagree on the letter are
    dropped, as in training splits."""
    fmt, source = locate(Path(path).expanduser(), format)
    digest = _source_digest(fmt, source)
    caps = (max_member_bytes, max_total_bytes)
    pool, _ = cached_pool(
        resolve_cache_dir(cache_dir),
        cache_key([fmt, digest, convert]),
        lambda: _read(fmt, source, convert, allow_pickle, caps),
        _within(caps),
    )
    _check_letters(pool.labels, source)
    kept, _, _ = unique_images(pool.images, pool.labels)
    return Split(pool.images[kept], pool.labels[kept]), digest


def locate(path: Path, format: str) -> tuple[str, Path]:
    """(format, file or folder to read): detected, or the one source of a forced format."""
    if format == "auto":
        return sources.detect(path)
    if not path.exists():
        raise DataError(f"data.path={path} does not exist")
    sources.check_kind(path, f"data.path={path}")
    if format == "folder" or path.is_file():
        return format, path
    found = [p for fmt, p in sources.candidates(path) if fmt == format]
    if len(found) != 1:
        listed = ", ".join(map(str, found)) or "none"
        raise DataError(f"data.format={format}: {path} holds {len(found)} such sources ({listed})")
    return format, found[0]


def _source_digest(fmt: str, source: Path) -> str:
    if fmt == "folder":
        return folder_digest(source)
    if fmt == "idx":
        images = file_digest(source)
        return cache_key([images, file_digest(sources.labels_beside(source))])
    return file_digest(source)


def _within(caps: tuple[int, int]) -> Callable[[Pool], bool]:
    """Whether a cached pool's source fits the caps: when it does not, the source is read
    again, which refuses it exactly as the first read would have with these caps."""
    return lambda pool: not pool.extent.exceeds(*caps)


def _read(fmt: str, source: Path, convert: bool, allow_pickle: bool, caps: tuple[int, int]) -> Pool:
    if fmt == "idx":
        images, labels = sources.read_idx(source, max_total_bytes=caps[1])
        pool = _checked_arrays(images, labels, source, convert)
        # what read_idx checks against the cap: each file's size as its header declares it
        pool.extent = sources.Extent(max(images.nbytes + 16, labels.nbytes + 8))
        return pool
    if fmt == "pickle":  # not capped: a pickle is only read when trusted (data.allow_pickle)
        images, labels = sources.read_pickle(source, allow_pickle)
        return _checked_arrays(images, labels, source, convert)
    read = sources.read_tar if fmt == "tar" else sources.read_folder
    extent = sources.Extent()
    members = read(source, *caps, extent=extent)
    decoded = decode_members(members, convert, order=sources.letter_order)
    return Pool(decoded.images, decoded.labels, decoded.skipped, decoded.converted, extent)


def _checked_arrays(images: np.ndarray, labels: np.ndarray, source: Path, convert: bool) -> Pool:
    """IDX and pickle hold one array: a wrong image size is an error (or resized if allowed)."""
    if images.shape[1:] == IMAGE_SHAPE:
        return Pool(images, labels)
    if not convert:
        raise DataError(
            f"{source}: images are {images.shape[1]}x{images.shape[2]}, not 28x28; "
            "set data.convert=true to resize them"
        )
    from PIL import Image

    resized = np.stack(
        [
            np.asarray(Image.fromarray(im).resize(IMAGE_SHAPE, Image.Resampling.LANCZOS))
            for im in images
        ]
    )
    note = f"all {len(images)} images {images.shape[1]}x{images.shape[2]} -> 28x28"
    return Pool(resized, labels, converted=[note])


def _check_letters(labels: np.ndarray, source: Path) -> None:
    counts = np.bincount(labels, minlength=len(CLASSES))
    missing = [letter for letter, count in zip(CLASSES, counts, strict=True) if count == 0]
    if missing:
        raise DataError(f"{source} has no readable image of {', '.join(missing)}")
