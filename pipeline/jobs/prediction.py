"""Predict letters for images on disk with any logged model: read, decode, predict, write CSV.

Reading goes through the data stage's readers (unlabelled: any folder layout), decoding
through its bulk PNG decoder (in parallel on all cores); files that cannot be read are listed
with the reason and left out, never a crash. The model is whatever MLflow loads from the URI,
called on large batches of raw uint8 pixels.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.stages.data import sources
from pipeline.stages.data.dataset import CLASSES, IMAGE_SHAPE, DataError
from pipeline.stages.data.decode import decode_images

log = logging.getLogger(__name__)

_PNG_NAMES = (".png",)


@dataclass
class Images:
    """Readable images with their names (path inside the folder or archive, or IDX index)."""

    names: list[str]
    pixels: np.ndarray  # (n, 28, 28) uint8
    format: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    converted: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """What a prediction did, with the wall time of each step."""

    read: int
    skipped: list[tuple[str, str]]
    output: Path
    seconds: dict[str, float] = field(default_factory=dict)


def input_format(path: Path) -> str:
    """png, folder, tar or idx, from what the path is and its name."""
    if not path.exists():
        raise DataError(f"input={path} does not exist")
    if path.is_dir():
        return "folder"
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        return "tar"
    if "idx3" in name:
        return "idx"
    return "png"  # a single image; anything unreadable is listed as skipped


def read_images(path: Path, convert: bool = False) -> Images:
    """Every image at `path`: a PNG, a folder of PNGs (any layout), a tar(.gz) of PNGs or an
    IDX images file. Unreadable files, and with `convert` off images that are not 28x28
    greyscale, are skipped and listed; a broken archive or IDX file is a DataError."""
    fmt = input_format(path)
    if fmt == "idx":
        pixels = sources.read_idx_images(path)
        if pixels.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"{path}: images are {pixels.shape[1:]}, not 28x28")
        return Images([str(i) for i in range(len(pixels))], pixels, fmt)
    if fmt == "folder":
        blobs = sources.read_folder(path, labelled=False)
    elif fmt == "tar":
        blobs = sources.read_tar(path, labelled=False)
    else:
        blobs = sources.Blobs([path.read_bytes()], [0], [path.name])
    decoded = decode_images(blobs.data, blobs.names, convert, skip_other=True)
    names = [name for name, ok in zip(blobs.names, decoded.ok, strict=True) if ok]
    return Images(names, decoded.images[decoded.ok], fmt, decoded.skipped, decoded.converted)


def predict_probabilities(model: Any, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """(n, 10) probabilities from a loaded `LetterClassifier`, `batch_size` images per call."""
    if not len(pixels):
        return np.zeros((0, len(CLASSES)), dtype=np.float32)
    parts = [
        np.asarray(model.predict(None, pixels[start : start + batch_size]))
        for start in range(0, len(pixels), batch_size)
    ]
    return np.concatenate(parts)


def write_csv(output: Path, names: list[str], probabilities: np.ndarray) -> None:
    """file, letter, probability (of that letter): one row per image, in reading order."""
    output.parent.mkdir(parents=True, exist_ok=True)
    best = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=int)
    top = probabilities[np.arange(len(best)), best] if len(best) else np.zeros(0)
    with output.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "letter", "probability"])
        writer.writerows(
            (name, CLASSES[int(b)], f"{float(p):.6f}")
            for name, b, p in zip(names, best, top, strict=True)
        )


def load_model(model_uri: str) -> Any:
    """The letter classifier behind any URI MLflow accepts (runs:/, models:/m-...,
    models:/name/3, models:/name@alias), read as data (`tracking.models.load_classifier`),
    warmed up: the decoder's and the model's first calls trace their graphs (a second or
    more), which is start-up, not the work."""
    import io

    from PIL import Image

    from pipeline.tracking.models import load_classifier

    model = load_classifier(model_uri)
    blank = np.zeros((1, *IMAGE_SHAPE), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(blank[0]).save(png, format="PNG")
    decode_images([png.getvalue()], ["warm-up"])
    model.predict(None, blank)
    return model


def predict_files(
    model: Any,
    input_path: Path,
    output: Path,
    convert: bool = False,
    batch_size: int = 8192,
    clock: Callable[[], float] = time.perf_counter,
) -> Outcome:
    """Read, decode, predict and write the CSV; the model is already loaded (start-up is not
    the work measured)."""
    seconds: dict[str, float] = {}
    start = clock()
    images = read_images(input_path, convert)
    seconds["read_decode"] = clock() - start
    start = clock()
    probabilities = predict_probabilities(model, images.pixels, batch_size)
    seconds["predict"] = clock() - start
    start = clock()
    write_csv(output, images.names, probabilities)
    seconds["write"] = clock() - start
    for note in images.converted:
        log.info("converted %s", note)
    return Outcome(len(images.names), images.skipped, output, seconds)
