"""Data stage: every source returns a `Dataset` of raw uint8 splits."""

from pipeline.stages.data.dataset import (
    CLASSES,
    IMAGE_SHAPE,
    IMAGE_SIZE,
    DataError,
    DataReport,
    Dataset,
    Split,
    stratified_split,
)
from pipeline.stages.data.synthetic import load_synthetic

__all__ = [
    "CLASSES",
    "IMAGE_SHAPE",
    "IMAGE_SIZE",
    "DataError",
    "DataReport",
    "Dataset",
    "Split",
    "load_synthetic",
    "stratified_split",
]
