"""A cache of decoded image pools, so a second run with the same data skips decoding.

Entries are keyed by a digest of the source's content plus everything that changes how it
is decoded, and written atomically, so concurrent sweep jobs can share one cache safely.
An entry that does not read back whole (the zip's CRC-32s, the arrays' types and shapes) is
rebuilt; a cache folder that cannot be written is warned about, and runs go on without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pipeline.config import project_home

log = logging.getLogger(__name__)

_VERSION = "1"  # bump when decoding changes what a cached pool holds


@dataclass
class Pool:
    """Decoded images of one source before splitting, with what decoding skipped or changed."""

    images: np.ndarray
    labels: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    converted: list[str] = field(default_factory=list)


def resolve_cache_dir(configured: str | None) -> Path:
    """`data.cache_dir`, else $PIPELINE_CACHE_DIR, else <project home>/.cache/data."""
    chosen = configured or os.environ.get("PIPELINE_CACHE_DIR")
    return Path(chosen).expanduser() if chosen else project_home() / ".cache" / "data"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    for block in _blocks(path):
        h.update(block)
    return h.hexdigest()


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(1 << 20), b"")


def folder_digest(root: Path) -> str:
    """SHA-256 over the relative path and bytes of every file under root, in sorted order.

    A link that leads out of root counts by where it leads, unread: reading the folder
    refuses it (`sources.read_folder`), and nothing outside the source is read before that.
    """
    h = hashlib.sha256()
    inside = root.resolve()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(root)).encode() + b"\0")
        target = file.resolve() if file.is_symlink() else None
        if target is not None and not target.is_relative_to(inside):
            h.update(b"link to " + str(target).encode())
        else:
            for block in _blocks(file):
                h.update(block)
    return h.hexdigest()


def cache_key(parts: Iterable[object]) -> str:
    return hashlib.sha256(json.dumps([_VERSION, *map(str, parts)]).encode()).hexdigest()[:32]


def cached_pool(directory: Path | None, entry: str, build: Callable[[], Pool]) -> tuple[Pool, bool]:
    """(the pool, whether it came from the cache); `directory=None` disables caching."""
    if directory is None:
        return build(), False
    arrays = directory / f"{entry}.npz"
    meta = directory / f"{entry}.json"
    if arrays.exists() and meta.exists():
        try:
            return _read_entry(arrays, meta), True
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            log.warning("Cache entry %s is damaged (%s); rebuilding it", arrays, exc)
    pool = build()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(arrays, lambda f: np.savez(f, images=pool.images, labels=pool.labels))
        info = {"skipped": pool.skipped, "converted": pool.converted, "n": len(pool.labels)}
        _atomic_write(meta, lambda f: f.write(json.dumps(info).encode()))
    except OSError as exc:
        log.warning(
            "Cannot write the data cache in %s (%s); going on without it (data.cache_dir)",
            directory,
            exc,
        )
    return pool, False


def _read_entry(arrays: Path, meta: Path) -> Pool:
    """A cache entry, read whole (which checks the zip's CRC-32s) and checked for shape."""
    with np.load(arrays) as stored:
        images, labels = stored["images"], stored["labels"]
    info = json.loads(meta.read_text())
    n = info.get("n", len(labels))  # entries written before "n" was recorded have none
    if (
        images.dtype != np.uint8
        or images.ndim != 3
        or labels.dtype != np.uint8
        or labels.shape != (len(images),)
        or len(images) != n
    ):
        raise ValueError(f"holds {images.dtype} {images.shape} images, {labels.shape} labels")
    return Pool(images, labels, [tuple(s) for s in info["skipped"]], info["converted"])


def _atomic_write(target: Path, write: Callable[[BinaryIO], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
