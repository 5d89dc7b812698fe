"""Writers of small notMNIST-shaped sources for tests: PNG folders, archives, IDX files."""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
from conftest import rendered
from PIL import Image

from pipeline.stages.data import CLASSES


def png(pixels: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def letters(n_per_letter: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    images, labels = rendered(10 * n_per_letter, seed=seed, fonts=("DejaVuSans.ttf",))
    order = np.argsort(labels, kind="stable")
    return images[order], labels[order]


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:05d}.png").write_bytes(png(image))
    return root


def write_tar(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for member in extra:
            archive.addfile(member)
    return path


def tar_files(images: np.ndarray, labels: np.ndarray, top: str = "notMNIST_tiny") -> dict:
    return {
        f"{top}/{CLASSES[label]}/{i:05d}.png": png(image)
        for i, (image, label) in enumerate(zip(images, labels, strict=True))
    }


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, prefix: str = "x") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    n, rows, cols = images.shape
    head = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, rows, cols))
    images_path = folder / f"{prefix}-images-idx3-ubyte.gz"
    images_path.write_bytes(gzip.compress(head + images.tobytes()))
    label_head = (2049).to_bytes(4, "big") + n.to_bytes(4, "big")
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(label_head + labels.astype(np.uint8).tobytes())
    )
    return images_path


def write_gzip_of_zeros(path: Path, head: bytes, mib_of_zeros: int, tail: bytes = b"") -> Path:
    """A gzip file of `head`, that many MiB of zero bytes and `tail`, written as concatenated
    gzip members (valid gzip, as `gunzip` and Python read it): about 1 KB on disk per MiB
    unpacked, built in milliseconds and without holding what it unpacks to."""
    zeros = gzip.compress(bytes(1 << 20))
    with path.open("wb") as out:
        out.write(gzip.compress(head))
        for _ in range(mib_of_zeros):
            out.write(zeros)
        out.write(gzip.compress(tail))
    return path


def png_declaring(width: int, height: int) -> bytes:
    """A well-formed 8-bit greyscale PNG whose header declares width x height, with one row
    of pixel data: a few dozen bytes that a decoder would turn into width x height bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(bytes(width + 1))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def write_tar_of_zeros(path: Path, names: list[str], mib_each: int) -> Path:
    """A .tar.gz whose members `names` each hold `mib_each` MiB of zero bytes, written as
    concatenated gzip members like `write_gzip_of_zeros`: never held whole."""
    zeros = gzip.compress(bytes(1 << 20))
    with path.open("wb") as out:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = mib_each << 20
            out.write(gzip.compress(info.tobuf()))
            for _ in range(mib_each):
                out.write(zeros)
        out.write(gzip.compress(bytes(1024)))  # the end-of-archive marker
    return path
