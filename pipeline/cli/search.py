"""`notmnist search [report] search=<space> [settings]`: run an Optuna study whose trials are
pipeline runs, as one of its workers.

`search.workers=N` starts N local workers; the same command on another machine (with a shared
`search.storage`) adds one. `notmnist search report [settings]` only logs the study's report
onto its parent run.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pipeline import process
from pipeline.cli._hydra import run_hydra
from pipeline.config import check_override_keys, validate, validate_search


def run(args: list[str]) -> int:
    if args[:1] == ["report"]:
        args = [*args[1:], "search.report_only=true"]
    run_hydra("study", _job, args, check=_check)
    return 0


def _check(args: Sequence[str]) -> None:
    """The training keys as `train` checks them; `search.*` is the study's schema's to say."""
    check_override_keys([a for a in args if not a.startswith("search.")])


def _job(cfg: DictConfig) -> None:
    overrides = list(HydraConfig.get().overrides.task)
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    search_raw = raw.pop("search")
    settings = validate(raw)
    search = validate_search(search_raw, settings)

    process.import_tensorflow_without_jax()
    from pipeline.jobs.search.command import main

    space = str(HydraConfig.get().runtime.choices.get("search", ""))
    hydra_overrides = list(HydraConfig.get().overrides.hydra)  # hydra.searchpath=...
    main(search, settings, overrides, f"search={space}", hydra_overrides)
