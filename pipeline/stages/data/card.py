"""The data card: what a run trained and was tested on, in tables and one figure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.stages.data.dataset import Dataset


@dataclass(frozen=True)
class DataCard:
    summary: dict[str, Any]
    class_counts: pd.DataFrame
    pixel_stats: pd.DataFrame
    skipped: pd.DataFrame
    samples: Figure

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


def data_card(dataset: Dataset, per_letter: int = 10, seed: int = 0) -> DataCard:
    report = dataset.report
    summary = {
        "source": dataset.source,
        "format": dataset.format,
        "digest": dataset.digest(),
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
        samples=_samples_figure(dataset, per_letter, seed),
    )


def _samples_figure(dataset: Dataset, per_letter: int, seed: int) -> Figure:
    """A mosaic: one row per letter of random training images, drawn as a single image."""
    rng = np.random.default_rng(seed)
    train = dataset.train
    size = train.images.shape[1]
    mosaic = np.zeros((len(dataset.classes) * size, per_letter * size), dtype=np.uint8)
    for row in range(len(dataset.classes)):
        pool = np.flatnonzero(train.labels == row)
        chosen = rng.choice(pool, size=min(per_letter, len(pool)), replace=False)
        for col, i in enumerate(chosen):
            mosaic[row * size : (row + 1) * size, col * size : (col + 1) * size] = train.images[i]
    fig = Figure(figsize=(per_letter * 0.6 + 0.6, len(dataset.classes) * 0.6), layout="constrained")
    ax = fig.subplots()
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255)
    ax.set_yticks([(r + 0.5) * size for r in range(len(dataset.classes))], dataset.classes)
    ax.set_xticks([])
    ax.set_title(f"Training images per letter ({dataset.format})")
    return fig
