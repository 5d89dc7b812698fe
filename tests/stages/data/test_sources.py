"""Reading every published form of notMNIST, and refusing what is unsafe or broken."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from make_sources import letters, png, tar_files, write_folder, write_idx, write_tar

from pipeline.stages.data import DataError
from pipeline.stages.data.sources import (
    _read_maybe_gzip,
    _ustar_members,
    detect,
    labels_beside,
    read_folder,
    read_idx,
    read_pickle,
    read_tar,
)


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray]:
    return letters(n_per_letter=4)


def test_idx_round_trip(tmp_path: Path, sample) -> None:
    images, labels = sample
    path = write_idx(tmp_path, images, labels)
    got_images, got_labels = read_idx(path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert labels_beside(path).name == "x-labels-idx1-ubyte.gz"


def test_plain_idx_and_mnist_dot_names(tmp_path: Path, sample) -> None:
    images, labels = sample
    gz = write_idx(tmp_path, images, labels)
    plain = tmp_path / "t10k-images.idx3-ubyte"
    plain.write_bytes(gzip.decompress(gz.read_bytes()))
    (tmp_path / "t10k-labels.idx1-ubyte").write_bytes(
        gzip.decompress((tmp_path / "x-labels-idx1-ubyte.gz").read_bytes())
    )
    np.testing.assert_array_equal(read_idx(plain)[0], images)


def test_idx_without_labels_names_what_it_looked_for(tmp_path: Path, sample) -> None:
    path = write_idx(tmp_path, *sample)
    (tmp_path / "x-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="x-labels-idx1-ubyte.gz"):
        read_idx(path)


def test_truncated_gz_is_named(tmp_path: Path, sample) -> None:
    path = write_idx(tmp_path, *sample)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"x-images-idx3-ubyte\.gz: truncated or corrupt gzip"):
        read_idx(path)


def test_idx_header_checks(tmp_path: Path, sample) -> None:
    images, labels = sample
    path = write_idx(tmp_path, images, labels)
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[3] = 1  # magic 2049: a labels file given as images
    path.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="magic number 2049, expected 2051"):
        read_idx(path)
    raw[3] = 3
    path.write_bytes(gzip.compress(bytes(raw[:-5])))
    with pytest.raises(DataError, match="header says"):
        read_idx(path)


def test_folder_reads_letters_in_order(tmp_path: Path, sample) -> None:
    images, labels = sample
    blobs = read_folder(write_folder(tmp_path / "unpacked", images, labels))
    assert blobs.labels == labels.tolist()
    assert blobs.names[0] == "A/00000.png"
    (tmp_path / "unpacked" / "notes.txt").write_text("ignored: not in a letter folder")
    assert len(read_folder(tmp_path / "unpacked").data) == len(images)


def test_tar_and_its_folder_agree(tmp_path: Path, sample) -> None:
    images, labels = sample
    archive = read_tar(write_tar(tmp_path / "t.tar.gz", tar_files(images, labels))).sorted()
    folder = read_folder(write_folder(tmp_path / "f", images, labels)).sorted()
    assert archive.data == folder.data
    assert archive.labels == folder.labels


def test_archive_member_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "evil.tar.gz", {"top/A/1.png": b"x", "../escape.png": b"x"})
    with pytest.raises(DataError, match=r"'\.\./escape\.png' would be unpacked outside"):
        read_tar(path)
    absolute = write_tar(tmp_path / "abs.tar.gz", {"/etc/A/1.png": b"x"})
    with pytest.raises(DataError, match="outside its folder"):
        read_tar(absolute)


def test_archive_with_link_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("top/A/link.png")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    path = write_tar(tmp_path / "link.tar.gz", {"top/A/1.png": b"x"}, extra=[link])
    with pytest.raises(DataError, match="is a link to '/etc/passwd'"):
        read_tar(path)


def test_archive_with_device_is_refused(tmp_path: Path) -> None:
    device = tarfile.TarInfo("top/A/dev")
    device.type = tarfile.CHRTYPE
    path = write_tar(tmp_path / "dev.tar.gz", {}, extra=[device])
    with pytest.raises(DataError, match="device or special file"):
        read_tar(path)


def test_truncated_archive_is_named(tmp_path: Path, sample) -> None:
    path = write_tar(tmp_path / "cut.tar.gz", tar_files(*sample))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"cut\.tar\.gz"):
        read_tar(path)


def test_pickle_needs_opt_in(tmp_path: Path, sample) -> None:
    images, labels = sample
    normalised = (images.astype(np.float32) - 127.5) / 255
    content = {
        f"{split}_{kind}": (normalised if kind == "dataset" else labels)
        for split in ("train", "valid", "test")
        for kind in ("dataset", "labels")
    }
    path = tmp_path / "notMNIST.pickle"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(DataError, match="data.allow_pickle=true"):
        read_pickle(path, allow_pickle=False)
    got_images, got_labels = read_pickle(path, allow_pickle=True)
    np.testing.assert_array_equal(got_images, np.concatenate([images] * 3))
    np.testing.assert_array_equal(got_labels, np.concatenate([labels] * 3))


def test_pickle_without_the_course_keys(tmp_path: Path) -> None:
    path = tmp_path / "other.pickle"
    path.write_bytes(pickle.dumps({"train_dataset": np.zeros((1, 28, 28))}))
    with pytest.raises(DataError, match="lacks train_labels"):
        read_pickle(path, allow_pickle=True)


def test_detect_formats(tmp_path: Path, sample) -> None:
    images, labels = sample
    folder = write_folder(tmp_path / "unpacked" / "notMNIST_tiny", images, labels)
    assert detect(folder) == ("folder", folder)
    assert detect(tmp_path / "unpacked") == ("folder", folder)  # the folder holding it
    idx = write_idx(tmp_path / "idx", images, labels)
    assert detect(tmp_path / "idx") == ("idx", idx)
    assert detect(idx) == ("idx", idx)
    archive = write_tar(tmp_path / "a.tgz", tar_files(images, labels))
    assert detect(archive) == ("tar", archive)


def test_detect_refuses_ambiguous_or_empty_folders(tmp_path: Path, sample) -> None:
    write_idx(tmp_path, *sample)
    write_tar(tmp_path / "a.tar.gz", tar_files(*sample))
    with pytest.raises(DataError, match=r"several notMNIST sources: .*a\.tar\.gz \(tar\), .*idx"):
        detect(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no notMNIST source"):
        detect(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        detect(tmp_path / "missing")
    (tmp_path / "weird.bin").write_bytes(png(sample[0][0]))
    with pytest.raises(DataError, match="set data.format"):
        detect(tmp_path / "weird.bin")


def _tarfile_members(raw: bytes) -> list[tuple]:
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as archive:
        return [(m.name, m.type, m.size, m.offset_data) for m in archive.getmembers()]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_direct_header_reading_agrees_with_tarfile(tmp_path: Path, sample, fmt: int) -> None:
    """Plain archives are read from their headers directly; long names (GNU or pax headers)
    leave them to tarfile. Either way the members are tarfile's, to the byte."""
    images, labels = sample
    files = {**tar_files(images, labels), f"top/{'deep' * 30}/A/long.png": png(images[0])}
    if fmt == tarfile.USTAR_FORMAT:
        files.pop(f"top/{'deep' * 30}/A/long.png")  # ustar cannot hold it
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=fmt) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    raw = _read_maybe_gzip(path)
    direct = _ustar_members(raw)
    if fmt == tarfile.USTAR_FORMAT:
        assert direct is not None
        assert [(m.name, m.type, m.size, m.offset_data) for m in direct] == _tarfile_members(raw)
    else:
        assert direct is None
    assert len(read_tar(path, labelled=False).names) == len(files)
