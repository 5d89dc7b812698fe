"""`notmnist serve`'s settings: a bad or unknown one is one line and exit 2, before
anything is imported or served."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, validate_serve
from pipeline.config.schema import check_serve_keys


def test_the_config_file_is_the_documented_defaults() -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pipeline.config import config_dir

    with initialize_config_dir(config_dir=str(config_dir() / "serve"), version_base="1.3"):
        cfg = compose(config_name="serve", overrides=["tracking.uri=null"])
    settings = validate_serve(OmegaConf.to_container(cfg, resolve=True))
    assert settings.model == "models:/notmnist@champion"
    assert (settings.host, settings.port, settings.poll_seconds) == ("127.0.0.1", 5001, 10)
    assert (settings.max_images, settings.max_body_bytes) == (1024, 8 * 2**20)
    assert settings.tracking.uri is None
    with pytest.raises(ConfigError, match="poll_seconds=0"):
        validate_serve({**settings.model_dump(), "poll_seconds": 0})
    check_serve_keys(["model=models:/other@prod", "tracking.uri=http://h:5000", "hydra.run.dir=."])
