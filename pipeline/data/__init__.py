"""Data stage: every source returns a `Dataset` of raw uint8 splits."""

from pipeline.data.dataset import CLASSES, DataError, DataReport, Dataset, Split, stratified_split
from pipeline.data.synthetic import load_synthetic

__all__ = [
    "CLASSES",
    "DataError",
    "DataReport",
    "Dataset",
    "Split",
    "load_synthetic",
    "stratified_split",
]
