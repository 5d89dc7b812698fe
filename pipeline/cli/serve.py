"""`notmnist serve [model=models:/notmnist@champion] [port=5001] ...`: serve a registered
model's alias over HTTP and follow it as it moves (`pipeline.serving`).

Settings in conf/serve/serve.yaml. Problems once it runs (the registry unreachable, a version
that fails to load) are logged in one line each and it keeps serving.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from pipeline import process
from pipeline.cli._hydra import run_hydra
from pipeline.config import check_serve_keys, validate_serve


def run(args: list[str]) -> int:
    run_hydra("serve/serve", _job, args, check=check_serve_keys)
    return 0


def _job(cfg: DictConfig) -> None:
    settings = validate_serve(OmegaConf.to_container(cfg, resolve=True))
    from pipeline.tracking.store.location import store_uri

    store_uri(settings.tracking.uri)  # a tracking.uri without a scheme: said before the import
    process.import_tensorflow_without_jax()  # only once the config is known good
    from pipeline.serving import serve

    serve(settings)
