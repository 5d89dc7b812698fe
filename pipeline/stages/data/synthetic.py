"""The embedded default dataset: notMNIST-style letters rendered offline from bundled fonts.

notMNIST is glyphs of A-J taken from many fonts. matplotlib ships DejaVu, STIX and Computer
Modern faces, so rendering them gives a dataset that needs no download. Every random choice
comes from one seeded generator, so the same arguments give the same bytes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from pipeline.stages.data.cache import Pool, cache_key, cached_pool, resolve_cache_dir
from pipeline.stages.data.dataset import (
    CLASSES,
    IMAGE_SIZE,
    DataError,
    DataReport,
    Dataset,
    Split,
    stratified_split,
)

_RENDERER = "1"  # bump when render_letters draws differently: old cache entries then miss
_OVERSAMPLE = 2  # draw at 56x56, then box-filter down: anti-aliased edges like the real set
_RENDER_PT = 64

# Stroke weight changes applied to the high-resolution glyph: erode, none, two dilations.
_STROKE_FILTERS = (
    ImageFilter.MinFilter(3),
    None,
    ImageFilter.MaxFilter(5),
    ImageFilter.MaxFilter(9),
)
_STROKE_PROBS = (0.2, 0.4, 0.25, 0.15)

log = logging.getLogger(__name__)


def font_dir() -> Path:
    """The folder of TrueType faces bundled with matplotlib."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.cache
def _glyphs(fonts: tuple[str, ...]) -> tuple[tuple[tuple[Image.Image, ...], ...], ...]:
    """Cropped high-resolution masks, indexed [font][letter][stroke variant]."""
    out = []
    for name in fonts:
        path = font_dir() / name
        if not path.is_file():
            raise DataError(f"font {name!r} not found in {font_dir()} (data.fonts)")
        font = ImageFont.truetype(str(path), _RENDER_PT)
        per_letter = []
        for letter in CLASSES:
            canvas = Image.new("L", (3 * _RENDER_PT, 3 * _RENDER_PT), 0)
            ImageDraw.Draw(canvas).text(
                (1.5 * _RENDER_PT, 1.5 * _RENDER_PT), letter, font=font, fill=255, anchor="mm"
            )
            padded = canvas.crop(_expand(canvas.getbbox(), 6))
            variants = tuple(padded if f is None else padded.filter(f) for f in _STROKE_FILTERS)
            per_letter.append(tuple(v.crop(v.getbbox()) for v in variants))
        out.append(tuple(per_letter))
    return tuple(out)


def _expand(box: tuple[int, int, int, int] | None, pad: int) -> tuple[int, int, int, int]:
    if box is None:
        raise ValueError("a font rendered an empty glyph")
    left, top, right, bottom = box
    return left - pad, top - pad, right + pad, bottom + pad


def _inverse_affine(
    glyph_size: tuple[int, int],
    out_size: int,
    box: tuple[float, float],
    shift: tuple[float, float],
    angle: float,
    shear: float,
) -> tuple[float, ...]:
    """PIL's AFFINE coefficients mapping output pixels back into the glyph image.

    Forward map: centre the glyph, scale it to `box` (width, height), shear along x,
    rotate by `angle` radians, then move it to the canvas centre plus `shift`.
    """
    gw, gh = glyph_size
    scale = np.diag([box[0] / gw, box[1] / gh])
    shear_m = np.array([[1.0, shear], [0.0, 1.0]])
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    inv = np.linalg.inv(rot @ shear_m @ scale)
    centre_out = np.array([out_size / 2 + shift[0], out_size / 2 + shift[1]])
    offset = np.array([gw / 2, gh / 2]) - inv @ centre_out
    return (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])


def render_letters(
    n: int,
    *,
    seed: int,
    fonts: Sequence[str],
    max_rotation_deg: float,
    max_shear: float,
    min_scale: float,
    max_shift: float,
    noise_std: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Render `n` letters, balanced over A-J: (uint8 images (n, 28, 28), uint8 labels (n,)).

    Each image takes a random face and stroke weight, is stretched to a random box that
    fills `min_scale`..1 of the frame on each axis (notMNIST stretches glyphs to fill it),
    sheared, rotated, shifted by up to `max_shift` pixels, and gets Gaussian pixel noise.
    The distortions have no defaults here: conf/data/synthetic.yaml's are
    `SyntheticDataConfig.distortions()`.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    glyphs = _glyphs(tuple(fonts))
    labels = rng.permutation(np.arange(n) % len(CLASSES)).astype(np.uint8)
    big = IMAGE_SIZE * _OVERSAMPLE

    font_idx = rng.integers(len(glyphs), size=n)
    stroke_idx = rng.choice(len(_STROKE_FILTERS), size=n, p=_STROKE_PROBS)
    boxes = rng.uniform(min_scale, 1.0, size=(n, 2)) * big
    shifts = rng.uniform(-max_shift, max_shift, size=(n, 2)) * _OVERSAMPLE
    angles = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, size=n))
    shears = rng.uniform(-max_shear, max_shear, size=n)

    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for i in range(n):
        glyph = glyphs[font_idx[i]][labels[i]][stroke_idx[i]]
        coeffs = _inverse_affine(
            glyph.size, big, tuple(boxes[i]), tuple(shifts[i]), angles[i], shears[i]
        )
        drawn = glyph.transform(
            (big, big), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR
        )
        images[i] = np.asarray(drawn.reduce(_OVERSAMPLE), dtype=np.float32)
    images += rng.normal(0.0, noise_std, size=images.shape).astype(np.float32)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels


_ANNOUNCE = 10_000  # letters: about 2 s of rendering on our 2-core machine


def load_synthetic(
    *,
    train_size: int,
    valid_size: int,
    test_size: int,
    seed: int,
    fonts: Sequence[str],
    max_rotation_deg: float,
    max_shear: float,
    min_scale: float,
    max_shift: float,
    noise_std: float,
    cache: bool,
    cache_dir: str | None,
) -> Dataset:
    """Render train+valid+test letters in one stream and split them, stratified by letter.
    Its arguments are conf/data/synthetic.yaml's keys, keyword-only with no defaults.

    Rendering 24,000 letters takes about 5 s, so the result is cached, keyed by every
    argument and the Pillow and matplotlib versions that draw the fonts: the same bytes
    come back, sooner.
    """
    import matplotlib
    import PIL

    n = train_size + valid_size + test_size
    distortions = {
        "max_rotation_deg": max_rotation_deg,
        "max_shear": max_shear,
        "min_scale": min_scale,
        "max_shift": max_shift,
        "noise_std": noise_std,
    }
    entry = cache_key(
        [
            "synthetic",
            _RENDERER,
            n,
            seed,
            list(fonts),
            distortions,
            PIL.__version__,
            matplotlib.__version__,
        ]
    )

    def render() -> Pool:
        if n >= _ANNOUNCE:  # one line, so that a first run does not look stuck
            log.info("Rendering %d letters (about %.0f s, once: then cached)", n, n / 5000)
        return Pool(*render_letters(n, seed=seed, fonts=fonts, **distortions))

    pool, hit = cached_pool(resolve_cache_dir(cache_dir) if cache else None, entry, render)
    parts = stratified_split(pool.labels, (train_size, valid_size, test_size), seed)
    train, valid, test = (Split(pool.images[idx], pool.labels[idx]) for idx in parts)
    return Dataset(
        train,
        valid,
        test,
        source=f"synthetic:seed={seed}",
        format="synthetic",
        report=DataReport(decoded=n, from_cache=hit),
    )
