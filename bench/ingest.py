"""Data ingest: images decoded per second from the shared notMNIST sample.

    .venv/bin/python bench/ingest.py [--repeats 5]

Reference: the course's loader, which extracts the archive and then, per file, opens and
decodes the PNG, normalises it to float and appends it. Compared in one process: the
pipeline's readers for the PNG folder, the tar.gz and the IDX files, and a second, cached load.
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from common import measure, report
from PIL import Image

from pipeline.config.compose import default_config
from pipeline.stages.data import CLASSES
from pipeline.stages.data.decode import decode_members
from pipeline.stages.data.notmnist import load_notmnist
from pipeline.stages.data.sources import Member, letter_order, read_folder, read_idx, read_tar

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "notmnist-sample"


def course_load(root: Path) -> np.ndarray:
    """The course's load_letter over every letter folder: open, decode, normalise, append."""
    out = []
    for letter in CLASSES:
        folder = root / letter
        for name in os.listdir(folder):  # noqa: PTH208 - the course's code, as written
            image = np.asarray(Image.open(folder / name), dtype=float)
            out.append((image - 255 / 2) / 255)
    return np.stack(out)


def course_extract_and_load(archive: Path, scratch: Path) -> np.ndarray:
    target = Path(tempfile.mkdtemp(dir=scratch))
    with tarfile.open(archive) as handle:
        handle.extractall(target, filter="data")
    return course_load(target / "notMNIST_sample")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    archive, idx = SAMPLE / "notMNIST_sample.tar.gz", SAMPLE / "images-idx3-ubyte.gz"
    if not archive.exists():
        sys.exit(f"the shared sample is missing: {archive}")
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        with tarfile.open(archive) as handle:
            handle.extractall(scratch / "folder", filter="data")
        folder = scratch / "folder" / "notMNIST_sample"
        n = sum(1 for _ in folder.rglob("*.png"))
        composed = default_config("data=notmnist", f"data.path={archive}").data
        settings = {**composed.model_dump(exclude={"source"}), "cache_dir": str(scratch / "cache")}
        load_notmnist(**settings)  # fill the cache

        def ours(members_of: Callable[[], Iterator[Member]]) -> Callable[[], None]:
            def run() -> None:
                decode_members(members_of(), order=letter_order)

            return run

        rows = [
            measure(
                "course loop, PNG folder (reference)",
                lambda: course_load(folder),
                n,
                "img",
                args.repeats,
            ),
            measure(
                "course: extract tar.gz, then loop",
                lambda: course_extract_and_load(archive, scratch),
                n,
                "img",
                args.repeats,
            ),
            measure(
                "pipeline: PNG folder", ours(lambda: read_folder(folder)), n, "img", args.repeats
            ),
            measure(
                "pipeline: tar.gz in memory",
                ours(lambda: read_tar(archive)),
                n,
                "img",
                args.repeats,
            ),
            measure("pipeline: IDX gz", lambda: read_idx(idx), n, "img", args.repeats),
            measure(
                "pipeline: second load (cache, split, dedupe)",
                lambda: load_notmnist(**settings),
                n,
                "img",
                args.repeats,
            ),
        ]
    report(
        f"Data ingest of the notMNIST sample ({n:,} PNGs, 28x28 grey)",
        rows,
        reference="course loop, PNG folder (reference)",
        path="ingest.json",
    )


if __name__ == "__main__":
    main()
