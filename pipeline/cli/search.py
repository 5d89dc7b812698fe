"""`python -m pipeline.search search=<space> [overrides]` (or `notmnist-search`): run an
Optuna study whose trials are pipeline runs, as one of its workers.

`search.workers=N` starts N local workers; the same command on another machine (with a shared
`search.storage`) adds one. `python -m pipeline.search report [overrides]` only logs the
study's report onto its parent run.
"""

from __future__ import annotations

import logging
import sys

from pipeline.cli import _process

_process.configure()

import hydra  # noqa: E402 - after the process settings, which must precede these imports
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from pipeline.config import (  # noqa: E402
    ConfigError,
    check_override_keys,
    config_dir,
    validate,
    validate_search,
)
from pipeline.stages.data.dataset import DataError  # noqa: E402

log = logging.getLogger("pipeline")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="study")
def _hydra_main(cfg: DictConfig) -> None:
    overrides = list(HydraConfig.get().overrides.task)
    raw = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(raw, dict)
    try:
        search_raw = raw.pop("search")
        settings = validate(raw)
        search = validate_search(search_raw, settings)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    _process.import_tensorflow_without_jax()
    from pipeline.jobs import search as job

    space = str(HydraConfig.get().runtime.choices.get("search", ""))
    try:
        hydra_overrides = list(HydraConfig.get().overrides.hydra)  # hydra.searchpath=...
        code = job.main(search, settings, overrides, f"search={space}", hydra_overrides)
    except ValueError as exc:  # a storage refused before any work
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except DataError as exc:
        print(f"data error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the running trial's run is marked KILLED
        print("interrupted: this worker's trial is marked KILLED", file=sys.stderr)
        raise SystemExit(130) from None
    if code:
        raise SystemExit(code)


def main() -> None:
    """The console script: `report` as first word only reports; unknown keys are rejected
    with the allowed ones named; then Hydra runs the study."""
    if sys.argv[1:2] == ["report"]:
        del sys.argv[1]
        sys.argv.append("search.report_only=true")
    try:
        check_override_keys([a for a in sys.argv[1:] if not a.startswith("search.")])
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    _hydra_main()
