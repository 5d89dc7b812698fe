"""A cache of decoded image pools, so a second run with the same data skips decoding.

Entries are keyed by a digest of the source's content plus everything that changes how it
is decoded, and written atomically, so concurrent sweep jobs can share one cache safely.
An entry is data read back, not trusted: one that does not read back whole (the zip's
CRC-32s, the arrays' types and shapes, the SHA-256 of its arrays recorded beside them) is
rebuilt with a warning; a cache folder that cannot be written is warned about, and runs go
on without it. An entry also records what reading the source measured (`Extent`), so that a
hit is refused as a fresh read would be when the caps are lower now.
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
from typing import Any, BinaryIO

import numpy as np

from pipeline.config import project_home
from pipeline.stages.data.dataset import arrays_digest
from pipeline.stages.data.sources import Extent, open_regular

log = logging.getLogger(__name__)

_VERSION = "2"  # bump when decoding, or what an entry records, changes


@dataclass
class Pool:
    """Decoded images of one source before splitting, with what decoding skipped or changed."""

    images: np.ndarray
    labels: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    converted: list[str] = field(default_factory=list)
    extent: Extent = field(default_factory=Extent)  # what reading the source measured


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
    with open_regular(path, str(path)) as handle:
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


def cached_pool(
    directory: Path | None,
    entry: str,
    build: Callable[[], Pool],
    accept: Callable[[Pool], bool] = lambda pool: True,
) -> tuple[Pool, bool]:
    """(the pool, whether it came from the cache); `directory=None` disables caching.

    An entry that `accept` refuses is not used: the pool is built again from the source,
    which then says what is wrong with it (the caps: see `Extent`)."""
    if directory is None:
        return build(), False
    arrays = directory / f"{entry}.npz"
    meta = directory / f"{entry}.json"
    if arrays.exists() and meta.exists():
        try:
            cached = _read_entry(arrays, meta)
        except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            log.warning("Cache entry %s is damaged (%s); rebuilding it", arrays, exc)
        else:
            if accept(cached):
                return cached, True
    pool = build()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(arrays, lambda f: np.savez(f, images=pool.images, labels=pool.labels))
        info = {
            "skipped": pool.skipped,
            "converted": pool.converted,
            "n": len(pool.labels),
            "sha256": arrays_digest(pool.images, pool.labels),
            "unpacked_bytes": pool.extent.unpacked_bytes,
            "largest_member_bytes": pool.extent.largest_member_bytes,
        }
        _atomic_write(meta, lambda f: f.write(json.dumps(info).encode()))
    except OSError as exc:
        log.warning(
            "Cannot write the data cache in %s (%s); going on without it (data.cache_dir)",
            directory,
            exc,
        )
    return pool, False


def _read_entry(arrays: Path, meta: Path) -> Pool:
    """A cache entry, read whole (which checks the zip's CRC-32s), checked for shape and
    against the SHA-256 of its arrays recorded when it was written."""
    with np.load(arrays) as stored:
        images, labels = stored["images"], stored["labels"]
    info = json.loads(meta.read_text())
    if (
        images.dtype != np.uint8
        or images.ndim != 3
        or labels.dtype != np.uint8
        or labels.shape != (len(images),)
        or len(images) != _count(info, "n")
    ):
        raise ValueError(f"holds {images.dtype} {images.shape} images, {labels.shape} labels")
    if arrays_digest(images, labels) != info["sha256"]:
        raise ValueError("its arrays do not match the SHA-256 recorded with them")
    skipped, converted = info["skipped"], info["converted"]
    if not (_strings(converted) and isinstance(skipped, list)) or not all(
        _strings(s) and len(s) == 2 for s in skipped
    ):
        raise ValueError("its lists of skipped and converted files are malformed")
    extent = Extent(_count(info, "unpacked_bytes"), _count(info, "largest_member_bytes"))
    return Pool(images, labels, [(s[0], s[1]) for s in skipped], converted, extent)


def _count(info: dict[str, Any], key: str) -> int:
    value = info[key]
    if type(value) is not int or value < 0:
        raise ValueError(f"{key}={value!r} is not a count")
    return value


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _atomic_write(target: Path, write: Callable[[BinaryIO], object]) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
