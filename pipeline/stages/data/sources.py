"""Where real notMNIST comes from: find the source a path names and read it into raw images.

Published forms: the original archive (`notMNIST_small.tar.gz`: a top folder with A/ ... J/ of
PNGs) packed or unpacked, MNIST-format IDX pairs, and the course's pickle. Archives and
gzipped files are streamed, member by member, and nothing is ever extracted to disk; what they
unpack to is capped (one member, and the whole), so that a small crafted file cannot take all
the memory. Archives and folders yield their files one at a time, for the decoder to consume
as they come (`decode.decode_members`), so that what is held at once stays bounded too.
Only regular files are read: a FIFO, a device or a socket is refused before it is read.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import pickle
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, cast

import numpy as np

from pipeline.stages.data.dataset import CLASSES, DataError

_IDX_IMAGES, _IDX_LABELS = 2051, 2049
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_PICKLE_SUFFIXES = (".pickle", ".pkl")
# Defaults of data.max_member_bytes and data.max_total_bytes (and predict's). notMNIST's PNGs
# are under 1 KB each. The largest real source, notMNIST_large (about 530,000 images), as a
# tar: the shared 7,000-image sample's archive unpacks to 8,377,856 bytes, 1,197 per member
# (a 512-byte header, then a PNG of 444 bytes on average padded to 512-byte blocks), so about
# 634 MB for 530,000; even if every PNG took the sample's largest block count (1,536 bytes
# with its header) 814 MB. As IDX: 530,000 x 784 = 416 MB; as a folder its PNGs, 235 MB.
# 1 GiB leaves a margin of 1.7x over the estimate (1.3x over that worst case).
MAX_MEMBER_BYTES = 64 << 20
MAX_TOTAL_BYTES = 1 << 30
# A pax or GNU long-name header, which tarfile reads in memory: real ones hold a path and a
# few numbers (a few hundred bytes). tarfile keeps a run of them in memory at once, by
# recursion, so a run too long for Python's stack is refused too.
_MAX_HEADER_BYTES = 64 << 10


class Member(NamedTuple):
    """One encoded image (the file's bytes) with its letter and name, before decoding."""

    data: bytes
    label: int
    name: str


def letter_order(label: int, name: str) -> tuple[int, str]:
    """The order of a training pool: by letter, then file name, so that an archive and its
    unpacked folder give the same pool (ties keep the reading order)."""
    return label, name.rsplit("/", 1)[-1]


@dataclass
class Extent:
    """What reading a source measured, which its caps bound: the bytes it unpacked to (an
    archive's stream, a folder's files, an IDX file's declared size) and its largest file.
    Kept with a cached pool, so that a cache hit is refused when the caps are now lower."""

    unpacked_bytes: int = 0
    largest_member_bytes: int = 0

    def exceeds(self, max_member_bytes: int, max_total_bytes: int) -> bool:
        return self.unpacked_bytes > max_total_bytes or self.largest_member_bytes > max_member_bytes


def open_regular(path: str | Path, shown: str) -> BinaryIO:
    """`path` opened for reading, or a DataError (`shown` names it) when it is not a regular
    file: a FIFO would make open() wait for a writer forever, a device such as /dev/zero never
    ends. Checked before opening (a device is never opened), and again with fstat on what was
    opened (O_NONBLOCK, so a FIFO swapped in meanwhile cannot block), so that no swap passes."""
    try:
        _refuse_special(Path(path).stat().st_mode, path, shown)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise DataError(f"{shown}: cannot read it ({exc.strerror})") from None
    try:
        _refuse_special(os.fstat(fd).st_mode, path, shown)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def check_kind(path: Path, shown: str) -> None:
    """A DataError unless `path` is a folder or a regular file (links followed)."""
    mode = path.stat().st_mode
    if not stat.S_ISDIR(mode):
        _refuse_special(mode, path, shown)


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _refuse_special(mode: int, path: str | Path, shown: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((kind for test, kind in _KINDS if test(mode)), "not a file")
    via = f" (a link to {Path(path).resolve()})" if Path(path).is_symlink() else ""
    raise DataError(f"{shown} is {kind}{via}, not a regular file; refused")


def detect(path: Path) -> tuple[str, Path]:
    """(format, the file or folder to read) for a path, or a DataError that says why not."""
    if not path.exists():
        raise DataError(f"data.path={path} does not exist")
    check_kind(path, f"data.path={path}")
    if path.is_file():
        return _file_format(path), path
    if _letter_root(path) is not None:
        return "folder", path
    found = candidates(path)
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(
            f"data.path={path} holds no notMNIST source: expected A/ ... J/ folders of PNGs, "
            "a .tar.gz archive of them, an *images-idx3-ubyte[.gz] file with its labels, "
            "or a .pickle"
        )
    listed = ", ".join(f"{p} ({fmt})" for fmt, p in found)
    raise DataError(
        f"data.path={path} holds several notMNIST sources: {listed}; set data.path to one of them"
    )


def _file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_ARCHIVE_SUFFIXES):
        return "tar"
    if name.endswith(_PICKLE_SUFFIXES):
        return "pickle"
    if "idx3" in name:
        return "idx"
    raise DataError(
        f"data.path={path}: cannot tell the format from the name; "
        "set data.format to tar, idx or pickle"
    )


def candidates(folder: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for child in sorted(folder.iterdir()):
        if child.is_dir() and _letter_root(child) is not None:
            found.append(("folder", child))
        elif child.is_file():
            name = child.name.lower()
            if name.endswith(_ARCHIVE_SUFFIXES):
                found.append(("tar", child))
            elif name.endswith(_PICKLE_SUFFIXES):
                found.append(("pickle", child))
            elif "images" in name and "idx3" in name:
                found.append(("idx", child))
    return found


def _letter_root(folder: Path) -> Path | None:
    """The folder itself if it holds letter folders A-J, else None."""
    return folder if any((folder / letter).is_dir() for letter in CLASSES) else None


# IDX ------------------------------------------------------------------------------------


def labels_beside(images: Path) -> Path:
    """The labels file that conventionally pairs with an IDX images file."""
    tried = []
    for old, new in (("images-idx3", "labels-idx1"), ("images.idx3", "labels.idx1")):
        if old in images.name:
            candidate = images.with_name(images.name.replace(old, new))
            if candidate.exists():
                return candidate
            tried.append(candidate.name)
    raise DataError(
        f"no labels file beside {images}: looked for {', '.join(tried) or 'a *labels-idx1* file'}"
    )


def read_idx(
    images_path: Path, labels_path: Path | None = None, max_total_bytes: int = MAX_TOTAL_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, rows, cols) uint8 and labels (n,) from an MNIST-format IDX pair, gz or plain.

    Each file is decompressed in chunks, no further than its header's size, which must not
    exceed `max_total_bytes`."""
    labels_path = labels_path or labels_beside(images_path)
    images = read_idx_images(images_path, max_total_bytes)
    labels = _idx_array(labels_path, _IDX_LABELS, 1, max_total_bytes)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels"
        )
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"{labels_path}: label {labels.max()} is outside 0-9 (A-J)")
    return images, labels


def read_idx_images(path: Path, max_total_bytes: int = MAX_TOTAL_BYTES) -> np.ndarray:
    """Images (n, rows, cols) uint8 of an MNIST-format IDX images file, gz or plain (for
    prediction, which has no labels file)."""
    return _idx_array(path, _IDX_IMAGES, 3, max_total_bytes)


def _idx_array(path: Path, magic: int, ndim: int, max_bytes: int) -> np.ndarray:
    header = 4 + 4 * ndim
    with _open_maybe_gzip(path) as handle:
        head = _read(path, handle, header)
        if len(head) < header:
            raise DataError(f"{path}: {len(head)} bytes is too short for an IDX header")
        found = int.from_bytes(head[:4], "big")
        if found != magic:
            raise DataError(f"{path}: IDX magic number {found}, expected {magic}")
        dims = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
        expected = header + math.prod(dims)
        if expected > max_bytes:
            raise DataError(
                f"{path}: header says {dims} ({expected:,} bytes), over the limit of "
                f"{max_bytes:,} bytes (data.max_total_bytes)"
            )
        body = _read(path, handle, expected - header + 1)  # one more: is there more?
    if len(body) != expected - header:
        holds = f"{header + len(body)}" if len(body) < expected - header else f"over {expected}"
        raise DataError(
            f"{path}: header says {dims} ({expected} bytes) but the file holds {holds} bytes"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


@contextlib.contextmanager
def _open_maybe_gzip(path: Path) -> Iterator[BinaryIO]:
    """The file, or its gunzipped content, to read in chunks (a regular file only)."""
    with open_regular(path, str(path)) as handle:
        gzipped = handle.read(2) == b"\x1f\x8b"
        handle.seek(0)
        if not gzipped:
            yield handle
            return
        with gzip.GzipFile(fileobj=handle, mode="rb") as unpacked:
            yield cast(BinaryIO, unpacked)


def _read(path: Path, handle: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes; a broken gzip stream is a DataError naming the file."""
    try:
        return handle.read(size)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt gzip data ({exc})") from None


_TAR_CHUNK = 1 << 16  # what tarfile reads from the stream at a time (ahead of its position)


class _Capped:
    """A stream that counts what is read from it and stops once past `cap` bytes plus what
    tarfile reads ahead (whole chunks, and a member's headers before the member itself): it
    reads the archive through this in chunks, so nothing much past the cap is decompressed.
    Within that, read_tar stops at the member whose end is past the cap."""

    def __init__(self, path: Path, handle: BinaryIO, cap: int) -> None:
        self.path, self.handle, self.cap = path, handle, cap
        self.limit = cap + _TAR_CHUNK + 2 * _MAX_HEADER_BYTES
        self.total = 0
        self.member: str | None = None  # the last member read, for the message

    def read(self, size: int = -1) -> bytes:
        data = _read(self.path, self.handle, size if size >= 0 else self.limit + 1)
        self.total += len(data)
        if self.total > self.limit:
            raise DataError(_too_much(self.path, self.cap, self.member, after=True))
        return data


def _too_much(path: Path, cap: int, member: str | None, after: bool = False) -> str:
    where = f"{'after' if after else 'at'} member {member!r}" if member else "at the start"
    return (
        f"{path}: unpacks to more than {cap:,} bytes, the limit of data.max_total_bytes "
        f"(reached {where})"
    )


class _HugeHeaderError(Exception):
    def __init__(self, name: str, size: int) -> None:
        super().__init__(name, size)
        self.name, self.size = name, size


class _CappedTarInfo(tarfile.TarInfo):
    """Refuses a pax or GNU long-name header larger than `_MAX_HEADER_BYTES` before tarfile
    reads it into memory (tarfile's hook: subclasses may override _proc_member)."""

    _META = (
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
    )

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in self._META and self.size > _MAX_HEADER_BYTES:
            raise _HugeHeaderError(self.name, self.size)
        # a hook of tarfile's (documented in its source) that typeshed does not declare
        proc: Any = super()._proc_member(archive)  # type: ignore[misc]
        return cast(tarfile.TarInfo, proc)


# PNG folders and archives ------------------------------------------------------------------


def read_folder(
    root: Path,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    labelled: bool = True,
    extent: Extent | None = None,
) -> Iterator[Member]:
    """Every file under root/A ... root/J, in sorted order; other entries are ignored.
    Unlabelled (for prediction): every file anywhere under root, named by its relative path.

    As in an archive, a link that leads out of the folder is refused, and so is a file over
    `max_member_bytes` (its size from fstat, before reading), files adding up to more than
    `max_total_bytes`, or what is not a regular file when opened. Files are yielded one at a
    time; `extent`, if given, is updated as they are read.
    os.scandir and open() rather than pathlib: half the time per file, which matters at
    half a million files.
    """
    inside = root.resolve()
    extent = extent if extent is not None else Extent()
    files: list[tuple[int, str, bool]] = []  # (label, path shown, is a link)
    if labelled:
        for label, letter in enumerate(CLASSES):
            if (root / letter).is_dir():
                _check_link(root, inside, root / letter, letter)
                files += [(label, f"{letter}/{n}", link) for n, link in _files_in(root / letter)]
    else:
        files = [(0, shown, link) for shown, link in _files_under(root, inside)]
    for label, shown, link in files:
        file = os.path.join(root, shown)  # noqa: PTH118
        if link:
            _check_link(root, inside, Path(file), shown)
        with open_regular(file, f"{root}: {shown!r}") as handle:
            size = os.fstat(handle.fileno()).st_size  # read(cap) would allocate cap bytes
            if size > max_member_bytes:
                raise DataError(_too_big(root, "file", shown, max_member_bytes, size))
            blob = handle.read(size + 1)  # one more: a file that grew is caught below
        if len(blob) > max_member_bytes:
            raise DataError(_too_big(root, "file", shown, max_member_bytes))
        extent.unpacked_bytes += len(blob)
        extent.largest_member_bytes = max(extent.largest_member_bytes, len(blob))
        if extent.unpacked_bytes > max_total_bytes:
            raise DataError(
                f"{root}: its files add up to more than {max_total_bytes:,} bytes, the "
                f"limit of data.max_total_bytes (reached at {shown!r})"
            )
        yield Member(blob, label, shown)
        del blob  # not held while the next file is read


def _files_in(folder: Path) -> list[tuple[str, bool]]:
    """(name, is a link) of the files in one folder, sorted."""
    with os.scandir(folder) as entries:
        return sorted((e.name, e.is_symlink()) for e in entries if e.is_file())


def _files_under(root: Path, inside: Path, prefix: str = "") -> list[tuple[str, bool]]:
    """(relative path, is a link) of every file under `root`, sorted, hidden entries
    (.DS_Store) left out; a linked folder that leads out of the source is refused."""
    found: list[tuple[str, bool]] = []
    with os.scandir(root / prefix if prefix else root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            shown = f"{prefix}{entry.name}"
            if entry.is_dir():
                if entry.is_symlink():
                    _check_link(root, inside, Path(entry.path), shown)
                found.extend(_files_under(root, inside, f"{shown}/"))
            elif entry.is_file():
                found.append((shown, entry.is_symlink()))
    return found


def _check_link(root: Path, inside: Path, path: Path, shown: str) -> None:
    """The archive rule for folders: a link that leads out of the source folder is refused."""
    target = path.resolve()
    if not target.is_relative_to(inside):
        raise DataError(
            f"{root}: {shown!r} is a link to {str(target)!r}, outside the folder; "
            "links that leave the source folder are refused"
        )


def _too_big(source: Path, kind: str, name: str, limit: int, size: int | None = None) -> str:
    says = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    return (
        f"{source}: {kind} {name!r} is {says}, over the limit of {limit:,} bytes "
        "(data.max_member_bytes)"
    )


def read_tar(
    path: Path,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    labelled: bool = True,
    extent: Extent | None = None,
) -> Iterator[Member]:
    """Every regular file in a `<top>/<letter>/<file>` or `<letter>/<file>` member of the archive;
    unlabelled (for prediction), every regular file, whatever its folders.

    The archive is streamed: decompressed in chunks and read one member at a time, each
    yielded as it is read. A member whose header declares more than `max_member_bytes` is
    refused unread, no more of one is read than its header declares, and all together no
    further than `max_total_bytes`. Every member is checked first: a link, a device or a path
    that would leave the folder it unpacks into is refused, as `tar -x` of it would be unsafe.
    `extent`, if given, is updated as the archive is read.
    """
    extent = extent if extent is not None else Extent()
    with _open_maybe_gzip(path) as handle:
        stream = _Capped(path, handle, max_total_bytes)
        try:
            # _Capped has the read() tarfile's stream mode uses, not the whole file protocol
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=stream,
                mode="r|",
                tarinfo=_CappedTarInfo,
                bufsize=_TAR_CHUNK,
            ) as archive:
                for member in archive:
                    _check_member(path, member)
                    if member.isfile():
                        if member.size > max_member_bytes:
                            raise DataError(
                                _too_big(path, "member", member.name, max_member_bytes, member.size)
                            )
                        extent.largest_member_bytes = max(extent.largest_member_bytes, member.size)
                    if archive.offset > max_total_bytes:  # the end of this member's data
                        raise DataError(_too_much(path, max_total_bytes, member.name))
                    stream.member = member.name
                    extent.unpacked_bytes = stream.total
                    letter = _letter_of(member) if labelled else None
                    if letter is None and (labelled or not member.isfile()):
                        continue
                    label = CLASSES.index(letter) if letter is not None else 0
                    yield Member(_member_data(path, archive, member), label, member.name)
                extent.unpacked_bytes = stream.total
        except _HugeHeaderError as exc:
            raise DataError(
                f"{path}: member {exc.name!r} is a {exc.size:,}-byte extended header; refused"
            ) from None
        except RecursionError:
            after = f" after member {stream.member!r}" if stream.member else ""
            raise DataError(
                f"{path}: more extended headers in a row{after} than tarfile can read; refused"
            ) from None
        except tarfile.TarError as exc:
            raise DataError(f"{path}: not a readable tar archive ({exc})") from None


def _member_data(path: Path, archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A member's bytes. A large one is read a chunk at a time into one buffer: tarfile's
    stream reads a single read() through lists of chunks and joins, four copies at once."""
    content = archive.extractfile(member)
    if content is None or member.size <= _TAR_CHUNK:
        blob = content.read(member.size + 1) if content else b""  # <= the cap + 1
    else:
        buffer = bytearray(member.size)
        got = 0
        while got < member.size and (chunk := content.read(_TAR_CHUNK)):
            buffer[got : got + len(chunk)] = chunk
            got += len(chunk)
        blob = bytes(memoryview(buffer)[:got])
        del buffer
    if len(blob) != member.size:  # the header says how much data follows
        raise DataError(f"{path}: member {member.name!r} is truncated")
    return blob


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    if member.issym() or member.islnk():
        raise DataError(
            f"{archive}: member {member.name!r} is a link to {member.linkname!r}; "
            "archives with links are refused"
        )
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{archive}: member {member.name!r} is a device or special file; refused")
    # tarfile.data_filter would say the same, but resolves paths on disk: 3x slower here
    if member.name.startswith("/") or ".." in member.name.split("/"):
        raise DataError(
            f"{archive}: member {member.name!r} would be unpacked outside its folder; refused"
        )


def _letter_of(member: tarfile.TarInfo) -> str | None:
    parts = member.name.split("/")
    if member.isfile() and len(parts) >= 2 and parts[-2] in CLASSES:
        return parts[-2]
    return None


# The course's pickle -------------------------------------------------------------------------

_PICKLE_KEYS = ("train", "valid", "test")


def read_pickle(path: Path, allow_pickle: bool) -> tuple[np.ndarray, np.ndarray]:
    """All images and labels of the course's notMNIST.pickle (its splits are pooled).

    The course stored normalised floats (p - 127.5) / 255; they are turned back into 0-255.
    """
    if not allow_pickle:
        raise DataError(
            f"{path} is a pickle: loading one runs whatever code it contains, so it is refused. "
            "If you made it or trust its source, set data.allow_pickle=true"
        )
    try:
        with path.open("rb") as handle:
            content = pickle.load(handle)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise DataError(f"{path}: not a readable pickle ({exc})") from None
    missing = [
        f"{s}_{kind}"
        for s in _PICKLE_KEYS
        for kind in ("dataset", "labels")
        if not isinstance(content, dict) or f"{s}_{kind}" not in content
    ]
    if missing:
        raise DataError(f"{path}: the pickle lacks {', '.join(missing)}")
    images = np.concatenate([_to_pixels(path, content[f"{s}_dataset"]) for s in _PICKLE_KEYS])
    labels = np.concatenate([np.asarray(content[f"{s}_labels"]) for s in _PICKLE_KEYS])
    return images, labels.astype(np.uint8)


def _to_pixels(path: Path, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if array.size and (array.min() < -0.5 - 1e-6 or array.max() > 0.5 + 1e-6):
        raise DataError(
            f"{path}: float images outside [-0.5, 0.5]; expected the course's (p - 127.5) / 255"
        )
    return np.clip(np.rint(array * 255.0 + 127.5), 0, 255).astype(np.uint8)
