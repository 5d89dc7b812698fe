"""`python -m pipeline [overrides]`: validate the composed config, then run it."""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pipeline.config import ConfigError, check_override_keys, validate
from pipeline.data.dataset import DataError


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, float]:
    try:
        settings = validate(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    from pipeline.run import run  # imports TensorFlow: only once the config is known good

    try:
        return run(settings, overrides=HydraConfig.get().overrides.task)
    except DataError as exc:  # bad input: the run is already marked FAILED; no traceback
        print(f"data error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    try:
        check_override_keys(sys.argv[1:])
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    main()
