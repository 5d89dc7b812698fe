"""The data card: what a run trained and was tested on, in tables and sample images.

Numbers only: the run recorder writes them out (`markdown`) and draws the samples
(`pipeline.reporting.figures.samples_figure`) in its own process, which needs none of the
data itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.stages.data.dataset import Dataset


@dataclass(frozen=True)
class DataCard:
    summary: dict[str, Any]
    class_counts: pd.DataFrame
    pixel_stats: pd.DataFrame
    skipped: pd.DataFrame
    samples: np.ndarray  # random training images, a row per letter, as one uint8 mosaic

    def markdown(self) -> str:
        summary = pd.Series(self.summary, name="value").to_frame()
        skipped = self.skipped.head(50)
        more = len(self.skipped) - len(skipped)
        return "\n\n".join(
            [
                "# Data card",
                summary.to_markdown(),
                "## Images per letter and split",
                self.class_counts.to_markdown(),
                "## Pixel statistics (0-255)",
                self.pixel_stats.to_markdown(floatfmt=".2f"),
                f"## Skipped files ({len(self.skipped)})",
                skipped.to_markdown(index=False) if len(skipped) else "None.",
                f"... and {more} more in skipped_files.csv" if more > 0 else "",
            ]
        )


def data_card(
    dataset: Dataset, per_letter: int = 10, seed: int = 0, digest: str | None = None
) -> DataCard:
    """The card of `dataset` (whose `digest()` is `digest`, where the caller has it)."""
    report = dataset.report
    summary = {
        "source": dataset.source,
        "format": dataset.format,
        "digest": dataset.digest() if digest is None else digest,
        "source_digest": report.source_digest or "",
        "images_decoded": report.decoded,
        "files_skipped": len(report.skipped),
        "images_converted": len(report.converted),
        "exact_duplicates_removed": report.exact_duplicates_removed,
        "conflicting_duplicates_removed": report.conflicting_duplicates_removed,
        **{f"near_duplicates_removed_{k}": v for k, v in report.near_duplicates_removed.items()},
        **(
            {"holdout_overlap_removed": report.holdout_overlap_removed}
            if report.holdout_overlap_removed is not None
            else {}
        ),
        **{f"{name}_size": len(split) for name, split in dataset.splits()},
        "decoded_from_cache": report.from_cache,
    }
    stats = {}
    for name, split in dataset.splits():
        pixels = split.images.astype(np.float32)
        stats[name] = {
            "mean": pixels.mean(),
            "std": pixels.std(),
            "min": pixels.min(),
            "max": pixels.max(),
            "ink_fraction": (split.images > 127).mean(),
        }
    return DataCard(
        summary=summary,
        class_counts=dataset.class_counts(),
        pixel_stats=pd.DataFrame(stats).T.rename_axis("split"),
        skipped=pd.DataFrame(list(report.skipped), columns=["file", "reason"]),
        samples=_samples(dataset, per_letter, seed),
    )


def _samples(dataset: Dataset, per_letter: int, seed: int) -> np.ndarray:
    """A mosaic: one row per letter of random training images, as a single image."""
    rng = np.random.default_rng(seed)
    train = dataset.train
    size = train.images.shape[1]
    mosaic = np.zeros((len(dataset.classes) * size, per_letter * size), dtype=np.uint8)
    for row in range(len(dataset.classes)):
        pool = np.flatnonzero(train.labels == row)
        chosen = rng.choice(pool, size=min(per_letter, len(pool)), replace=False)
        for col, i in enumerate(chosen):
            mosaic[row * size : (row + 1) * size, col * size : (col + 1) * size] = train.images[i]
    return mosaic
