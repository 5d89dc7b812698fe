"""Where real notMNIST comes from: find the source a path names and read it into raw images.

Published forms: the original archive (`notMNIST_small.tar.gz`: a top folder with A/ ... J/ of
PNGs) packed or unpacked, MNIST-format IDX pairs, and the course's pickle. Archives are read
in memory, member by member; nothing is ever extracted to disk.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.stages.data.dataset import CLASSES, DataError

_IDX_IMAGES, _IDX_LABELS = 2051, 2049
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_PICKLE_SUFFIXES = (".pickle", ".pkl")


@dataclass
class Blobs:
    """Encoded images (file bytes) with their letters and names, before decoding."""

    data: list[bytes] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def add(self, blob: bytes, label: int, name: str) -> None:
        self.data.append(blob)
        self.labels.append(label)
        self.names.append(name)

    def sorted(self) -> Blobs:
        """Ordered by letter, then file name: an archive and its unpacked folder agree."""
        order = sorted(
            range(len(self.names)),
            key=lambda i: (self.labels[i], self.names[i].rsplit("/", 1)[-1]),
        )
        return Blobs(
            [self.data[i] for i in order],
            [self.labels[i] for i in order],
            [self.names[i] for i in order],
        )


def detect(path: Path) -> tuple[str, Path]:
    """(format, the file or folder to read) for a path, or a DataError that says why not."""
    if not path.exists():
        raise DataError(f"data.path={path} does not exist")
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


def read_idx(images_path: Path, labels_path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, rows, cols) uint8 and labels (n,) from an MNIST-format IDX pair, gz or plain."""
    labels_path = labels_path or labels_beside(images_path)
    images = read_idx_images(images_path)
    labels = _idx_array(labels_path, _IDX_LABELS, 1)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels"
        )
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"{labels_path}: label {labels.max()} is outside 0-9 (A-J)")
    return images, labels


def read_idx_images(path: Path) -> np.ndarray:
    """Images (n, rows, cols) uint8 of an MNIST-format IDX images file, gz or plain."""
    return _idx_array(path, _IDX_IMAGES, 3)


def _idx_array(path: Path, magic: int, ndim: int) -> np.ndarray:
    raw = _read_maybe_gzip(path)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: IDX magic number {found}, expected {magic}")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(
            f"{path}: header says {dims} ({expected} bytes) but the file holds {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt gzip data ({exc})") from None


# PNG folders and archives ------------------------------------------------------------------


def read_folder(root: Path, labelled: bool = True) -> Blobs:
    """Every file under root/A ... root/J, in sorted order; other entries are ignored.
    Unlabelled (for prediction): every file anywhere under root, named by its relative path.

    os.scandir and open() rather than pathlib: half the time per file, which matters at
    half a million files.
    """
    blobs = Blobs()
    if not labelled:
        for name in _files_under(str(root)):
            with open(os.path.join(root, name), "rb") as handle:  # noqa: PTH118, PTH123
                blobs.add(handle.read(), 0, name)
        return blobs
    for label, letter in enumerate(CLASSES):
        folder = root / letter
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            files = sorted(e.name for e in entries if e.is_file())
        for name in files:
            with open(os.path.join(folder, name), "rb") as handle:  # noqa: PTH118, PTH123
                blobs.add(handle.read(), label, f"{letter}/{name}")
    return blobs


def _files_under(root: str, prefix: str = "") -> list[str]:
    """Relative paths of the files under root, sorted, hidden entries (.DS_Store) left out."""
    found: list[str] = []
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                found.extend(_files_under(entry.path, f"{prefix}{entry.name}/"))
            elif entry.is_file():
                found.append(prefix + entry.name)
    return found


def read_tar(path: Path, labelled: bool = True) -> Blobs:
    """Every regular file in a `<top>/<letter>/<file>` or `<letter>/<file>` member of the archive;
    unlabelled (for prediction), every regular file, whatever its folders.

    The archive is decompressed in memory and its members sliced out by offset (three times
    faster than reading them one by one). Every member is checked first: a link, a device or
    a path that would leave the folder it unpacks into is refused, as `tar -x` of it would be
    unsafe.
    """
    raw = _read_maybe_gzip(path)
    members = _ustar_members(raw)
    if members is None:
        try:
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
                members = archive.getmembers()
        except tarfile.TarError as exc:
            raise DataError(f"{path}: not a readable tar archive ({exc})") from None
    blobs = Blobs()
    for member in members:
        _check_member(path, member)
        letter = _letter_of(member) if labelled else None
        if letter is not None or (not labelled and member.isfile()):
            end = member.offset_data + member.size
            if end > len(raw):
                raise DataError(f"{path}: member {member.name!r} is truncated")
            label = CLASSES.index(letter) if letter is not None else 0
            blobs.add(raw[member.offset_data : end], label, member.name)
    return blobs


def _ustar_members(raw: bytes) -> list[tarfile.TarInfo] | None:
    """The members of a plain ustar archive of files and folders, read from the headers
    directly: tarfile's parser takes about as long as decoding the PNGs. None for anything
    else (links, devices, GNU long names, pax headers, bad checksums, a missing end), which
    tarfile then parses and judges as before."""
    members: list[tarfile.TarInfo] = []
    offset = 0
    while offset + 512 <= len(raw):
        header = raw[offset : offset + 512]
        if header.count(0) == 512:  # the end-of-archive block
            return members
        kind = header[156:157]
        if kind not in (b"0", b"\0", b"5") or header[257:262] != b"ustar" or header[124] & 0x80:
            return None
        try:
            checksum = int(header[148:156].strip(b" \0") or b"-1", 8)
            size = int(header[124:136].strip(b" \0") or b"0", 8)
        except ValueError:
            return None
        if checksum != sum(header[:148]) + 8 * 32 + sum(header[156:]):  # its field as spaces
            return None
        name = header[:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0]
        text = (prefix + b"/" + name if prefix else name).decode("utf-8", "surrogateescape")
        is_dir = kind == b"5" or (kind == b"\0" and text.endswith("/"))
        info = tarfile.TarInfo(text.rstrip("/") if is_dir else text)
        info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
        info.size = 0 if is_dir else size
        info.offset, info.offset_data = offset, offset + 512
        members.append(info)
        offset += 512 + -(-info.size // 512) * 512
    return None


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
