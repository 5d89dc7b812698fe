"""Reading every published form of notMNIST, and refusing what is unsafe or broken."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import PROJECT_ROOT, notmnist_args
from make_sources import (
    letters,
    png,
    tar_files,
    write_folder,
    write_gzip_of_zeros,
    write_idx,
    write_tar,
    write_tar_of_zeros,
)

from pipeline.stages.data import DataError
from pipeline.stages.data.cache import folder_digest
from pipeline.stages.data.sources import (
    detect,
    labels_beside,
    letter_order,
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
    members = list(read_folder(write_folder(tmp_path / "unpacked", images, labels)))
    assert [m.label for m in members] == labels.tolist()
    assert members[0].name == "A/00000.png"
    (tmp_path / "unpacked" / "notes.txt").write_text("ignored: not in a letter folder")
    assert len(list(read_folder(tmp_path / "unpacked"))) == len(images)


def test_folder_links_that_leave_it_are_refused(tmp_path: Path, sample) -> None:
    """The archive rule for folders: /etc/passwd behind a link in a letter folder is refused,
    and so is a letter folder that is a link to another place; links within the folder are
    read."""
    root = write_folder(tmp_path / "f", *sample)
    (root / "A" / "again.png").symlink_to(root / "B" / "00004.png")
    assert len(list(read_folder(root))) == 41
    (root / "A" / "passwd.png").symlink_to("/etc/passwd")
    with pytest.raises(
        DataError,
        match=r"'A/passwd\.png' is a link to '/etc/passwd', outside the folder; links that leave",
    ):
        list(read_folder(root))
    (root / "A" / "passwd.png").unlink()
    (root / "C").rename(tmp_path / "elsewhere")
    (root / "C").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError, match=rf"'C' is a link to '{tmp_path}/elsewhere', outside"):
        list(read_folder(root))


def test_folder_digest_never_reads_outside_the_folder(tmp_path: Path, sample) -> None:
    root = write_folder(tmp_path / "f", *sample)
    outside = tmp_path / "secret.txt"
    outside.write_text("one")
    (root / "A" / "x.png").symlink_to(outside)
    before = folder_digest(root)
    outside.write_text("two")
    assert folder_digest(root) == before


def test_tar_and_its_folder_agree(tmp_path: Path, sample) -> None:
    images, labels = sample
    archive = read_tar(write_tar(tmp_path / "t.tar.gz", tar_files(images, labels)))
    folder = read_folder(write_folder(tmp_path / "f", images, labels))
    archive, folder = (
        sorted(m, key=lambda m: letter_order(m.label, m.name)) for m in (archive, folder)
    )
    assert [(m.data, m.label) for m in archive] == [(m.data, m.label) for m in folder]


def test_archive_member_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "evil.tar.gz", {"top/A/1.png": b"x", "../escape.png": b"x"})
    with pytest.raises(DataError, match=r"'\.\./escape\.png' would be unpacked outside"):
        list(read_tar(path))
    absolute = write_tar(tmp_path / "abs.tar.gz", {"/etc/A/1.png": b"x"})
    with pytest.raises(DataError, match="outside its folder"):
        list(read_tar(absolute))


def test_archive_with_link_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("top/A/link.png")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    path = write_tar(tmp_path / "link.tar.gz", {"top/A/1.png": b"x"}, extra=[link])
    with pytest.raises(DataError, match="is a link to '/etc/passwd'"):
        list(read_tar(path))


def test_archive_with_device_is_refused(tmp_path: Path) -> None:
    device = tarfile.TarInfo("top/A/dev")
    device.type = tarfile.CHRTYPE
    path = write_tar(tmp_path / "dev.tar.gz", {}, extra=[device])
    with pytest.raises(DataError, match="device or special file"):
        list(read_tar(path))


def test_truncated_archive_is_named(tmp_path: Path, sample) -> None:
    path = write_tar(tmp_path / "cut.tar.gz", tar_files(*sample))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"cut\.tar\.gz"):
        list(read_tar(path))


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


# Bombs: small files that unpack to far more --------------------------------------------------

_GIB = 1 << 30
_LOAD_AND_REPORT_PEAK = """
import json
import sys
from pipeline.stages.data import DataError
from pipeline.stages.data.cache import folder_digest
from pipeline.stages.data.notmnist import load_notmnist
settings = json.loads(sys.argv[1])  # conf/data/notmnist.yaml's, from the test
for path in sys.argv[2:]:
    try:
        load_notmnist(**{**settings, "path": path})
        print("loaded", path)
    except DataError as exc:
        print(f"data error: {exc}")
# the peak resident memory of this program (ru_maxrss would also count the parent's, which
# the kernel records on exec after vfork)
with open("/proc/self/status") as status:
    print(next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")))
"""


def _idx_header(n: int) -> bytes:
    return b"".join(x.to_bytes(4, "big") for x in (2051, n, 28, 28))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_bombs_are_refused_naming_the_member_in_little_memory(tmp_path: Path) -> None:
    """A 1 MB .tar.gz holding one 1 GiB member, and 1 MB gzipped IDX files unpacking to 1 GiB
    (one whose header says 1 image, one whose header says 10 million): each is a one-line data
    error, read in a fresh process whose peak memory stays far below what they unpack to
    (measured: 150 MiB, imports included, against 2.2 GiB when archives were decompressed
    whole, and 4.2 GiB for a 2 GiB member)."""
    member = tarfile.TarInfo("top/A/bomb.png")
    member.size = _GIB
    tar = write_gzip_of_zeros(tmp_path / "bomb.tar.gz", member.tobuf(), 1024, bytes(1024))
    labels = (2049).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\0"
    for folder, n in (("lies", 1), ("huge", 10_000_000)):
        (tmp_path / folder).mkdir()
        write_gzip_of_zeros(tmp_path / folder / "x-images-idx3-ubyte.gz", _idx_header(n), 1024)
        (tmp_path / folder / "x-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    assert tar.stat().st_size < 2_000_000
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _LOAD_AND_REPORT_PEAK,
            json.dumps(notmnist_args(None, cache=False)),
            str(tar),
            *map(str, sorted(tmp_path.glob("*/x-i*"))),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    *errors, peak = result.stdout.strip().splitlines()
    assert errors == [
        f"data error: {tar}: member 'top/A/bomb.png' is 1,073,741,824 bytes, over the limit of "
        "67,108,864 bytes (data.max_member_bytes)",
        f"data error: {tmp_path}/huge/x-images-idx3-ubyte.gz: header says [10000000, 28, 28] "
        "(7,840,000,016 bytes), over the limit of 1,073,741,824 bytes (data.max_total_bytes)",
        f"data error: {tmp_path}/lies/x-images-idx3-ubyte.gz: header says [1, 28, 28] "
        "(800 bytes) but the file holds over 800 bytes",
    ]
    assert int(peak) < 400_000_000, f"peak {int(peak):,} bytes"


def test_archive_caps_are_configurable_and_count_every_byte(tmp_path: Path) -> None:
    files = {f"top/{letter}/{i}.png": bytes(1000) for letter in "ABC" for i in range(2)}
    path = write_tar(tmp_path / "t.tar.gz", files)
    assert len(list(read_tar(path))) == 6
    with pytest.raises(DataError, match=r"'top/A/0\.png' is 1,000 bytes, over the limit of 999"):
        list(read_tar(path, max_member_bytes=999))
    # each member: 512-byte header + 1,000 bytes padded to 1,024; the 6th ends at 9,216
    with pytest.raises(
        DataError, match=r"unpacks to more than 8,000 bytes.*\(reached at member 'top/C/1\.png'\)"
    ):
        list(read_tar(path, max_total_bytes=8000))
    assert len(list(read_tar(path, max_total_bytes=20_000))) == 6


def test_folder_caps(tmp_path: Path, sample) -> None:
    root = write_folder(tmp_path / "f", *sample)
    (root / "B" / "big.png").write_bytes(bytes(5000))
    with pytest.raises(
        DataError, match=r"file 'B/big\.png' is 5,000 bytes, over the limit of 4,096"
    ):
        list(read_folder(root, max_member_bytes=4096))
    before = sum(f.stat().st_size for f in [*root.glob("A/*"), *root.glob("B/0*")])
    cap = before + 4999  # the files of A and B, then big.png passes it
    with pytest.raises(DataError, match=rf"more than {cap:,} bytes.*at 'B/big\.png'"):
        list(read_folder(root, max_total_bytes=cap))
    assert len(list(read_folder(root))) == 41


def test_idx_cap_is_configurable(tmp_path: Path, sample) -> None:
    path = write_idx(tmp_path, *sample)
    assert len(read_idx(path, max_total_bytes=40 * 784 + 16)[0]) == 40
    with pytest.raises(DataError, match=r"\(31,376 bytes\), over the limit of 31,375 bytes"):
        read_idx(path, max_total_bytes=40 * 784 + 15)


def test_huge_extended_header_is_refused(tmp_path: Path) -> None:
    """tarfile reads a pax header whole into memory: one declaring 1 GiB is refused unread."""
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = _GIB
    path = write_gzip_of_zeros(tmp_path / "pax.tar.gz", pax.tobuf(), 2)
    with pytest.raises(DataError, match=r"'\./\./@PaxHeader' is a 1,073,741,824-byte extended"):
        list(read_tar(path))


def test_endless_run_of_long_name_headers_is_refused(tmp_path: Path) -> None:
    """tarfile reads a run of GNU long-name headers by recursion: 5,000 in a row (2.5 MB)
    were a RecursionError traceback."""
    longname = tarfile.TarInfo("././@LongLink")
    longname.type = tarfile.GNUTYPE_LONGNAME
    longname.size = 12
    run = (longname.tobuf(format=tarfile.USTAR_FORMAT) + b"top/A/x.png\0".ljust(512, b"\0")) * 5000
    path = write_gzip_of_zeros(tmp_path / "chain.tar.gz", run, 0)
    with pytest.raises(DataError, match="more extended headers in a row than tarfile can read"):
        list(read_tar(path))


# Bounded memory, special files ----------------------------------------------------------------


def test_default_caps_are_the_configs(tmp_path: Path) -> None:
    """One set of defaults: conf/data/notmnist.yaml says what sources.py sets (predict's
    config leaves them null, meaning these)."""
    from omegaconf import OmegaConf

    from pipeline.stages.data import sources

    data = OmegaConf.load(PROJECT_ROOT / "conf" / "data" / "notmnist.yaml")
    assert (data.max_member_bytes, data.max_total_bytes) == (64 << 20, 1 << 30)
    assert (sources.MAX_MEMBER_BYTES, sources.MAX_TOTAL_BYTES) == (64 << 20, 1 << 30)
    predict = OmegaConf.load(PROJECT_ROOT / "conf" / "predict" / "predict.yaml")
    assert (predict.max_member_bytes, predict.max_total_bytes) == (None, None)


def _whole_then_streamed(path: Path, monkeypatch: pytest.MonkeyPatch, convert: bool):
    """The pool as before streaming (every file held, sorted, decoded at once), then streamed
    in batches of a few files each, in the archive's order."""
    from pipeline.stages.data import decode

    members = sorted(read_tar(path), key=lambda m: letter_order(m.label, m.name))
    whole = decode.decode_members(members, convert)
    monkeypatch.setattr(decode, "_HELD_BYTES", 1500)  # 2-4 of these PNGs a batch
    return whole, decode.decode_members(read_tar(path), convert, order=letter_order)


def test_streamed_pool_equals_the_pool_decoded_at_once(
    tmp_path: Path, sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same images, labels, names, skipped and converted files in the same order, from an
    archive whose members are not in the pool's order, with bad and odd files among them
    and a file name found in two top folders."""
    images, labels = sample
    files = tar_files(images, labels, top="one")
    files["two/B/00005.png"] = files.pop("one/B/00005.png")  # sorts among one/B's files
    files["two/A/00001.png"] = png(images[9])  # the name of one/A/00001.png: a tie
    files["one/C/empty.png"] = b""
    files["two/A/broken.png"] = files["one/A/00001.png"][:60]
    files["one/D/big.png"] = png(np.full((32, 32), 9, np.uint8))
    files["one/A/rgb.png"] = png(images[5], mode="RGB")
    order = np.random.default_rng(0).permutation(len(files))
    names = list(files)
    path = write_tar(tmp_path / "t.tar.gz", {names[i]: files[names[i]] for i in order})
    whole, streamed = _whole_then_streamed(path, monkeypatch, convert=True)
    np.testing.assert_array_equal(streamed.images, whole.images)
    np.testing.assert_array_equal(streamed.labels, whole.labels)
    assert streamed.names == whole.names
    assert streamed.skipped == whole.skipped
    assert [name for name, _ in whole.skipped] == ["two/A/broken.png", "one/C/empty.png"]
    assert streamed.converted == whole.converted
    assert whole.converted == [
        "one/A/rgb.png: 28x28 RGB -> 28x28 L",
        "one/D/big.png: 32x32 L -> 28x28 L",
    ]
    assert len(whole.names) == len(images) + 3


def test_streamed_pool_names_the_same_odd_image(
    tmp_path: Path, sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without data.convert the first odd image in the pool's order is named, as before,
    not the first one read."""
    files = tar_files(*sample)
    files = {"top/J/big.png": png(np.zeros((32, 32), np.uint8)), **files}
    files["top/B/rgb.png"] = png(np.zeros((28, 28), np.uint8), mode="RGB")
    path = write_tar(tmp_path / "t.tar.gz", files)
    with pytest.raises(DataError, match=r"^top/B/rgb\.png is 28x28 RGB, not 28x28 greyscale"):
        _whole_then_streamed(path, monkeypatch, convert=False)
    from pipeline.stages.data.decode import decode_members

    with pytest.raises(DataError, match=r"^top/B/rgb\.png is 28x28 RGB"):
        decode_members(read_tar(path), order=letter_order)


def test_archive_members_are_decoded_without_holding_them_all(tmp_path: Path) -> None:
    """Twelve 8 MiB members (within both caps): decoding them as they are read holds a
    few at most (tracemalloc's peak: 42 MiB), not all 96 MiB (before: 112 MiB)."""
    import tracemalloc

    from pipeline.stages.data.decode import decode_members

    names = [f"top/{'ABCDEFGHIJ'[i % 10]}/{i:02d}.png" for i in range(12)]
    path = write_tar_of_zeros(tmp_path / "big.tar.gz", names, mib_each=8)
    tracemalloc.start()
    try:
        decoded = decode_members(read_tar(path), order=letter_order)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(decoded.skipped) == 12
    assert {reason for _, reason in decoded.skipped} == {"not an image Pillow can identify"}
    assert peak < 64 << 20, f"peak {peak:,} bytes"


def test_sources_that_are_not_regular_files_are_refused(tmp_path: Path, sample) -> None:
    """A FIFO named as an archive, or a link to /dev/zero, is refused in one line (before:
    a NotADirectoryError traceback, or a read that blocks forever)."""
    from pipeline.stages.data.notmnist import load_notmnist

    fifo = tmp_path / "letters.tar.gz"
    os.mkfifo(fifo)
    zero = tmp_path / "x-images-idx3-ubyte.gz"
    zero.symlink_to("/dev/zero")
    with pytest.raises(DataError, match=rf"^data.path={fifo} is a FIFO \(named pipe\), not a"):
        detect(fifo)
    for path, fmt in ((fifo, "tar"), (zero, "idx"), (zero, "auto")):
        with pytest.raises(DataError, match=r"is a (FIFO|character device).*; refused$"):
            load_notmnist(**notmnist_args(path, format=fmt, cache_dir=str(tmp_path / "cache")))
    with pytest.raises(DataError, match=r"is a character device \(a link to /dev/zero\)"):
        read_idx(zero, tmp_path / "labels")


def test_folder_file_swapped_for_a_fifo_is_refused(
    tmp_path: Path, sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder's file that was a regular file when listed and is a FIFO when opened is
    refused, not read (before: read, or a wait forever for a writer)."""
    from pipeline.stages.data import sources

    root = write_folder(tmp_path / "f", *sample)
    os.mkfifo(root / "A" / "pipe.png")
    writer = os.open(root / "A" / "pipe.png", os.O_RDWR | os.O_NONBLOCK)  # no wait, if read
    os.write(writer, b"not a png")
    listed = sources._files_in
    monkeypatch.setattr(sources, "_files_in", lambda f: [("pipe.png", False), *listed(f)])
    try:
        with pytest.raises(DataError, match=r"'A/pipe\.png' is a FIFO \(named pipe\), not a"):
            list(read_folder(root))
    finally:
        os.close(writer)
