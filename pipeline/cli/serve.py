"""`python -m pipeline.serve [model=models:/notmnist@champion] [port=5001] ...` (or
`notmnist-serve`): serve a registered model's alias over HTTP and follow it as it moves.

Settings in conf/serve/serve.yaml; a bad or unknown one ends the program with one line
(`config error:`) and exit code 2. Problems once it runs (the registry unreachable, a version
that fails to load) are logged in one line each and it keeps serving.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from pipeline.cli import _process
from pipeline.cli._hydra import checked_main

_process.configure()

import hydra  # noqa: E402 - after the process settings, which must precede these imports
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from pipeline.config import ConfigError, check_serve_keys, config_dir, validate_serve  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(config_dir() / "serve"), config_name="serve")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        settings = validate_serve(OmegaConf.to_container(cfg, resolve=True))
    except ConfigError as exc:
        _fail(f"config error: {exc}", 2)

    from pipeline.tracking.location import resolve_tracking_uri

    try:
        resolve_tracking_uri(settings.tracking.uri)
    except ValueError as exc:  # a tracking.uri without a scheme
        _fail(f"config error: {exc}", 2)
    _process.import_tensorflow_without_jax()  # only once the config is known good
    from pipeline.serving import serve

    serve(settings)


def _fail(message: str, code: int) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(code)


def main() -> None:
    """The console script: reject unknown keys with the allowed ones named, then run Hydra;
    TensorFlow's start-up notes are left out of the log, and its seconds of teardown out of
    the stop (`_process.exit_now`)."""
    _process.filter_native_noise()
    code: int | str | None = 0
    try:
        checked_main(_hydra_main, check=check_serve_keys)
    except SystemExit as exc:
        code = exc.code
    _process.exit_now(code)
