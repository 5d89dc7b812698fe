"""Small sources and configs for the retraining tests: synthetic letters written as IDX files,
so that they need no download and build in about a second."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from make_sources import letters, write_idx
from omegaconf import OmegaConf

from pipeline.config import RetrainAppConfig, config_dir, validate_retrain

# tiny training for a registry: fractions, since removing holdout copies changes the count
SMALL = (
    "data=notmnist",
    "data.train_size=0.8",
    "data.valid_size=0.1",
    "data.test_size=0.1",
    "model.hidden_units=[32]",
    "train.epochs=2",
    "train.batch_size=64",
    "train.verbose=0",
)


def retrain_settings(*overrides: str) -> RetrainAppConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="retrain", overrides=list(overrides))
    return validate_retrain(OmegaConf.to_container(cfg, resolve=True))


class Sources:
    """Training sources v1, v2 (v1 plus 50 images), v3 (v1 less 30), and two holdouts; the
    first holdout holds `LEAKED` exact copies of v1 images."""

    LEAKED = 12

    def __init__(self, root: Path) -> None:
        images, labels = letters(60, seed=0)
        extra_images, extra_labels = letters(5, seed=2)
        held_images, held_labels = letters(20, seed=1)
        held2_images, held2_labels = letters(20, seed=3)
        leak = np.arange(0, 600, 600 // self.LEAKED)[: self.LEAKED]
        self.v1 = str(write_idx(root / "v1", images, labels))
        self.v2 = str(
            write_idx(
                root / "v2",
                np.concatenate([images, extra_images]),
                np.concatenate([labels, extra_labels]),
            )
        )
        self.v3 = str(write_idx(root / "v3", images[30:], labels[30:]))
        self.holdout = str(
            write_idx(
                root / "holdout",
                np.concatenate([held_images, images[leak]]),
                np.concatenate([held_labels, labels[leak]]),
            )
        )
        self.holdout2 = str(write_idx(root / "holdout2", held2_images, held2_labels))
