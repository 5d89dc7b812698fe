"""The notMNIST data source end to end: odd files, sanitised splits, cache, the real sample."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_SAMPLE, cli, notmnist_args
from make_sources import (
    letters,
    png,
    png_declaring,
    tar_files,
    write_folder,
    write_gzip_of_zeros,
    write_idx,
    write_tar,
)

from pipeline.stages.data import DataError
from pipeline.stages.data.decode import decode_members
from pipeline.stages.data.notmnist import load_notmnist
from pipeline.stages.data.sources import Member, letter_order, read_idx, read_tar

SAMPLE_TAR = SHARED_SAMPLE / "notMNIST_sample.tar.gz"
SAMPLE_IDX = SHARED_SAMPLE / "images-idx3-ubyte.gz"
needs_sample = pytest.mark.skipif(
    not SAMPLE_TAR.exists() or not SAMPLE_IDX.exists(),
    reason=f"real notMNIST sample not found in {SHARED_SAMPLE}",
)


def _load(path: Path, tmp_path: Path, **kw):
    args = {
        "train_size": 0.6,
        "valid_size": 0.2,
        "test_size": 0.2,
        "cache_dir": str(tmp_path / "cache"),
    }
    return load_notmnist(**notmnist_args(path, **{**args, **kw}))


def _assert_disjoint(data) -> None:
    train, valid, test = ({im.tobytes() for im in split.images} for _, split in data.splits())
    assert not train & valid
    assert not train & test
    assert not valid & test


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images, labels = letters(n_per_letter=6)
    return write_folder(tmp_path / "notMNIST_tiny", images, labels)


def test_unreadable_files_are_skipped_and_named(folder: Path, tmp_path: Path) -> None:
    good = (folder / "A" / "00000.png").read_bytes()
    (folder / "A" / "corrupt.png").write_bytes(good[:8] + b"\x00garbage" * 20)
    (folder / "B" / "empty.png").write_bytes(b"")
    (folder / "C" / "notes.png").write_text("not an image at all")
    (folder / "D" / "truncated.png").write_bytes(good[: len(good) // 2])
    data = _load(folder, tmp_path)
    skipped = dict(data.report.skipped)
    assert set(skipped) == {"A/corrupt.png", "B/empty.png", "C/notes.png", "D/truncated.png"}
    assert skipped["B/empty.png"] == "empty file"
    assert skipped["C/notes.png"] == "not an image Pillow can identify"
    assert data.report.decoded == 60
    assert sum(len(s) for _, s in data.splits()) == 60


def test_link_out_of_the_folder_is_a_data_error(folder: Path, tmp_path: Path) -> None:
    (folder / "J" / "passwd.png").symlink_to("/etc/passwd")
    with pytest.raises(DataError, match=r"'J/passwd\.png' is a link to '/etc/passwd'"):
        _load(folder, tmp_path)


def test_png_bombs_are_skipped_and_named(folder: Path, tmp_path: Path) -> None:
    """PNGs declaring 100000x100000 (past Pillow's error limit) and 10000x10000 (past its
    warning limit, which it would decode) are unreadable images, listed like the others."""
    (folder / "E" / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    (folder / "F" / "big.png").write_bytes(png_declaring(10_000, 10_000))
    data = _load(folder, tmp_path, convert=True)
    skipped = dict(data.report.skipped)
    assert set(skipped) == {"E/bomb.png", "F/big.png"}
    assert skipped["E/bomb.png"].startswith(
        "decompression bomb (Image size (10000000000 pixels) exceeds limit of"
    )
    assert skipped["F/big.png"].startswith("decompression bomb (Image size (100000000 pixels)")
    assert data.report.decoded == 60


def test_wrong_size_or_mode_is_an_error_or_converted(folder: Path, tmp_path: Path) -> None:
    big = np.zeros((32, 32), np.uint8)
    big[8:24, 8:24] = 255
    (folder / "E" / "big.png").write_bytes(png(big))
    with pytest.raises(DataError, match=r"E/big\.png is 32x32 L, not 28x28 greyscale"):
        _load(folder, tmp_path, cache=False)
    (folder / "E" / "big.png").unlink()
    (folder / "F" / "colour.png").write_bytes(png(np.full((28, 28), 200, np.uint8), mode="RGB"))
    with pytest.raises(DataError, match=r"F/colour\.png is 28x28 RGB"):
        _load(folder, tmp_path, cache=False)
    (folder / "E" / "big.png").write_bytes(png(big))
    data = _load(folder, tmp_path, convert=True)
    assert sorted(data.report.converted) == [
        "E/big.png: 32x32 L -> 28x28 L",
        "F/colour.png: 28x28 RGB -> 28x28 L",
    ]
    assert data.report.decoded == 62


def test_letter_without_readable_images_is_named(folder: Path, tmp_path: Path) -> None:
    for file in (folder / "G").iterdir():
        file.write_bytes(b"")
    with pytest.raises(DataError, match="has no readable image of G"):
        _load(folder, tmp_path)
    for file in (folder / "G").iterdir():
        file.unlink()
    with pytest.raises(DataError, match="has no readable image of G"):
        _load(folder, tmp_path)


def test_splits_are_sanitised_and_stratified(tmp_path: Path) -> None:
    images, labels = letters(n_per_letter=20)
    images = np.concatenate([images, images[:15]])  # 15 exact copies
    labels = np.concatenate([labels, labels[:15]])
    copy_with_other_label = images[100:101]
    images = np.concatenate([images, copy_with_other_label])
    labels = np.concatenate([labels, [(labels[100] + 1) % 10]])
    data = _load(write_idx(tmp_path / "idx", images, labels), tmp_path, valid_size=40, test_size=40)
    assert data.report.exact_duplicates_removed == 15
    assert data.report.conflicting_duplicates_removed == 2  # both copies of the ambiguous image
    _assert_disjoint(data)
    assert (len(data.valid), len(data.test)) == (40, 40)
    assert len(data.train) == 200 - 1 - 80
    assert np.bincount(data.valid.labels).tolist() == [4] * 10


def test_near_duplicates_are_optional(tmp_path: Path) -> None:
    images, labels = letters(n_per_letter=20)
    nudged = images.copy()
    nudged[:, 0, 0] ^= 1  # differs in one pixel: not an exact duplicate
    path = write_idx(tmp_path / "idx", np.concatenate([images, nudged]), np.tile(labels, 2))
    exact = _load(path, tmp_path)
    near = _load(path, tmp_path, near_duplicate_rmsd=1.0)
    assert exact.report.near_duplicates_removed == {"valid": 0, "test": 0}
    removed = near.report.near_duplicates_removed
    assert removed["valid"] > 0
    assert removed["test"] > 0
    assert len(near.valid) == len(exact.valid) - removed["valid"]


def test_second_load_comes_from_the_cache(folder: Path, tmp_path: Path) -> None:
    first = _load(folder, tmp_path)
    second = _load(folder, tmp_path)
    assert (first.report.from_cache, second.report.from_cache) == (False, True)
    assert first.digest() == second.digest()
    (folder / "A" / "00000.png").write_bytes(png(np.zeros((28, 28), np.uint8)))
    assert not _load(folder, tmp_path).report.from_cache  # content changed: new entry


@pytest.mark.parametrize(
    "damage", ["truncated", "flipped byte", "bad json", "wrong count", "labels shifted"]
)
def test_damaged_cache_entry_is_rebuilt(
    damage: str, folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = _load(folder, tmp_path)
    [arrays] = (tmp_path / "cache").glob("*.npz")
    meta = arrays.with_suffix(".json")
    raw = bytearray(arrays.read_bytes())
    if damage == "truncated":
        arrays.write_bytes(raw[: len(raw) // 2])
    elif damage == "flipped byte":  # in the middle of the pixels: only the zip's CRC-32 tells
        raw[len(raw) // 2] ^= 0x10
        arrays.write_bytes(raw)
    elif damage == "bad json":
        meta.write_text('{"skipped": [')
    elif damage == "wrong count":
        meta.write_text(meta.read_text().replace('"n": 60', '"n": 59'))
    else:  # a whole, well-formed entry with every label one off: only the SHA-256 tells
        with np.load(arrays) as stored:
            images, labels = stored["images"], stored["labels"]
        np.savez(arrays, images=images, labels=(labels + 1) % 10)
    again = _load(folder, tmp_path)
    assert not again.report.from_cache
    assert again.digest() == first.digest()
    assert f"Cache entry {arrays} is damaged" in caplog.text
    assert _load(folder, tmp_path).report.from_cache  # rebuilt in place


@pytest.mark.parametrize("form", ["folder", "tar", "idx"])
def test_caps_hold_on_a_cache_hit(form: str, tmp_path: Path) -> None:
    """A source cached under the default caps is refused under lower ones with the error a
    fresh read gives (before: the cached pool was used, whatever the caps)."""
    images, labels = letters(n_per_letter=3)
    if form == "folder":
        path = write_folder(tmp_path / "f", images, labels)
    elif form == "tar":
        path = write_tar(tmp_path / "t.tar.gz", tar_files(images, labels))
    else:
        path = write_idx(tmp_path / "idx", images, labels)
    sizes = {"train_size": 10, "valid_size": 10, "test_size": 10}
    assert not _load(path, tmp_path, **sizes).report.from_cache
    assert _load(path, tmp_path, **sizes).report.from_cache
    caps = [{"max_total_bytes": 1000}] + ([{"max_member_bytes": 100}] if form != "idx" else [])
    for cap in caps:
        with pytest.raises(DataError) as fresh:
            _load(path, tmp_path, cache=False, **sizes, **cap)
        with pytest.raises(DataError) as hit:
            _load(path, tmp_path, **sizes, **cap)
        assert str(hit.value) == str(fresh.value)
        assert "data.max_" in str(hit.value)
    assert _load(path, tmp_path, **sizes).report.from_cache  # the entry is still good


def test_unwritable_cache_dir_warns_and_goes_on(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cache_dir under a regular file cannot be made, even by root (whom chmod won't stop)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for _ in range(2):
        data = _load(folder, tmp_path, cache_dir=str(blocker / "cache"))
        assert not data.report.from_cache
        assert data.report.decoded == 60
    assert caplog.text.count(f"Cannot write the data cache in {blocker / 'cache'}") == 2


def test_split_sizes_beyond_the_data(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="need 1000 images but only 60"):
        _load(folder, tmp_path, train_size=900, valid_size=50, test_size=50)


def test_decoding_keeps_order_past_a_bad_batch() -> None:
    images, labels = letters(n_per_letter=120)  # 1200 images: several decode batches
    blobs = [png(im) for im in images]
    blobs[700] = blobs[700][:40]  # truncated: its batch falls back to Pillow
    pool = decode_members(
        Member(blob, int(label), f"{i}.png")
        for i, (blob, label) in enumerate(zip(blobs, labels, strict=True))
    )
    keep = np.r_[0:700, 701:1200]
    np.testing.assert_array_equal(pool.images, images[keep])
    np.testing.assert_array_equal(pool.labels, labels[keep])
    assert [name for name, _ in pool.skipped] == ["700.png"]


@needs_sample
def test_real_sample_idx_and_tar_hold_the_same_images() -> None:
    idx_images, idx_labels = read_idx(SAMPLE_IDX)
    pool = decode_members(read_tar(SAMPLE_TAR), order=letter_order)
    assert pool.skipped == []
    order = np.lexsort((np.arange(len(idx_labels)), idx_labels))  # by letter, then file number
    np.testing.assert_array_equal(pool.images, idx_images[order])
    np.testing.assert_array_equal(pool.labels, idx_labels[order])
    assert np.bincount(pool.labels).tolist() == [700] * 10


@needs_sample
@pytest.mark.parametrize(
    ("source", "digest"),
    [
        (SAMPLE_TAR, "11451d3b7da3822981b0850aa5f3084afd50b02a8184e45737ba0f7fa0059611"),
        (SAMPLE_IDX, "c67d65bf3e9e68d9023ea5b2489ea1092e6074feb77d9493e2cd4440844273cf"),
    ],
)
def test_real_sample_splits_do_not_overlap(source: Path, digest: str, tmp_path: Path) -> None:
    data = _load(source, tmp_path, train_size=0.8, valid_size=0.1, test_size=0.1)
    assert data.report.exact_duplicates_removed == 124  # as the sample's README says
    assert sum(len(s) for _, s in data.splits()) == 7000 - 124
    _assert_disjoint(data)
    # the default splits' digest, as before archives were decoded while read (and since)
    assert data.digest() == digest


@needs_sample
def test_real_sample_folder_holding_both_forms_is_ambiguous(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="several notMNIST sources"):
        _load(SHARED_SAMPLE, tmp_path)
    data = _load(SHARED_SAMPLE, tmp_path, format="idx")
    assert data.format == "idx"


@pytest.mark.slow
def test_cli_refuses_an_archive_bomb_in_one_line(tmp_path: Path) -> None:
    """The caps are config keys: data.max_member_bytes reaches the reader; the run is FAILED."""
    from mlflow.tracking import MlflowClient

    member = tarfile.TarInfo("top/A/bomb.png")
    member.size = 1 << 30
    bomb = write_gzip_of_zeros(tmp_path / "bomb.tar.gz", member.tobuf(), 1024, bytes(1024))
    result = cli(
        "data=notmnist",
        f"data.path={bomb}",
        "data.max_member_bytes=1000000",
        f"hydra.run.dir={tmp_path / 'out'}",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"data error: {bomb}: member 'top/A/bomb.png' is 1,073,741,824 bytes, over the limit "
        "of 1,000,000 bytes (data.max_member_bytes)"
    )
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])  # this test's store, as the CLI's
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED"
