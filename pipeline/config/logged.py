"""A config read back from a run (its `config/config.yaml` artifact): data, never instructions.

Anyone who can write to a run (an account with EDIT on its experiment, anyone with the SQLite
file) can rewrite what it logged. So when `reproduce` or `train.resume` act on a logged config,
it is validated like the person's own input, and nothing in it may run code or reach the
network on its own: those switches (`OPT_INS`) are honoured only when the person's command
line gives them. Where the data is (`LOCATION`) may be given anew (the data's digest is
checked before training either way); where the pipeline writes (the cache, the tracking
store and its artifact location) is never taken from the record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config.schema import AppConfig, ConfigError, TrackingConfig, validate

log = logging.getLogger(__name__)

# what a rerun may change: where the data is and how it is read, never what it is
LOCATION = frozenset(
    {"data.path", "data.url", "data.format", "data.allow_pickle", "data.cache_dir"}
    | {"data.exclude_path", "data.exclude_format"}
)
# where the pipeline writes: from this process's config, never from a record
_WRITES = ("cache_dir",)
# logged paths and URLs, said before they are used
_SHOWN = ("path", "url", "exclude_path")
# bounds on what a record may hold, so that a rewritten artifact cannot take the memory
MAX_OVERRIDES = 500
MAX_OVERRIDE_CHARS = 5000
MAX_RECORD_BYTES = 1 << 20  # a logged config is a few KB


def read_record(path: Path, what: str) -> object:
    """A logged YAML artifact, parsed as plain data (`yaml.safe_load`: no Python objects),
    and no bigger than a record of this pipeline's can be."""
    import yaml

    size = path.stat().st_size
    if size > MAX_RECORD_BYTES:
        raise ConfigError(f"{what} is {size:,} bytes, more than a logged config can be; refused")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} is not readable YAML ({exc})".splitlines()[0]) from None


def check_given(given: Mapping[str, Any], command: str) -> None:
    """Only `LOCATION` keys may be given beside a logged config (the rest is the run's own)."""
    other = sorted(k for k in given if k not in LOCATION)
    if other:
        raise ConfigError(
            f"{command} reruns the run's own config: {', '.join(other)} cannot be given "
            f"(only {', '.join(sorted(LOCATION))})"
        )


def from_record(
    logged: object, run_id: str, given: Mapping[str, Any], tracking: TrackingConfig
) -> AppConfig:
    """The run's logged config as this process may act on it.

    `given` holds the person's own `data.*` settings (dotted keys, `LOCATION` only), which
    win over the logged ones; `tracking` replaces the logged tracking section (only the
    run's `log_model` is kept). A logged config that asks for a pickle to be loaded or for a
    download stops here, in one line that says which override grants it.
    """
    return validate(vetted(logged, run_id, given, tracking))


def vetted(
    logged: object, run_id: str, given: Mapping[str, Any], tracking: TrackingConfig
) -> dict[str, Any]:
    """`from_record`'s config before today's schema validates it: what a rerun of the run's
    own code (`reproduce at_commit=true`) hands to that code, whose schema may differ."""
    if not isinstance(logged, Mapping) or not all(isinstance(k, str) for k in logged):
        raise ConfigError(f"run {run_id}'s logged config is not a mapping of config sections")
    tree: dict[str, Any] = {k: v for k, v in logged.items() if k != "tracking"}
    logged_tracking = logged.get("tracking")
    keep = logged_tracking.get("log_model") if isinstance(logged_tracking, Mapping) else None
    tree["tracking"] = tracking.model_dump(mode="json")
    if isinstance(keep, bool):
        tree["tracking"]["log_model"] = keep
    if isinstance(data := tree.get("data"), Mapping):
        tree["data"] = _data_section(dict(data), run_id, given)
    return tree


def _data_section(data: dict[str, Any], run_id: str, given: Mapping[str, Any]) -> dict[str, Any]:
    own = {k.removeprefix("data."): v for k, v in given.items()}
    data |= dict.fromkeys(_WRITES)
    if data.get("source") != "notmnist":
        return data | own
    if data.get("allow_pickle") is True and "allow_pickle" not in own:
        where = data.get("path") or data.get("exclude_path")
        raise ConfigError(
            f"run {run_id}'s logged config asks for data.allow_pickle=true (loading "
            f"{where!s} as a pickle runs the code in it): add data.allow_pickle=true to "
            "allow it"
        )
    downloads = data.get("path") is None and own.get("path") is None
    if downloads and data.get("url") is not None and "url" not in own:
        raise ConfigError(
            f"run {run_id}'s logged config downloads data.url={data['url']}: add "
            f"data.url={data['url']} to allow it, or data.path=<a local copy>"
        )
    data["allow_pickle"] = False
    data |= own
    shown = [f"data.{k}={str(data[k])[:300]}" for k in _SHOWN if data.get(k) is not None]
    if shown:
        origin = "given" if any(f"data.{k}" in given for k in _SHOWN) else "as logged"
        log.info("Run %s's data (%s): %s", run_id, origin, " ".join(shown))
    return data


def logged_overrides(logged: object, run_id: str) -> list[str]:
    """A run's logged command-line overrides (`config/overrides.yaml`), checked to be what
    the pipeline writes there: a bounded list of strings (they become tags, nothing more)."""
    if logged is None:
        return []
    if (
        not isinstance(logged, list)
        or len(logged) > MAX_OVERRIDES
        or not all(isinstance(o, str) and len(o) <= MAX_OVERRIDE_CHARS for o in logged)
    ):
        raise ConfigError(f"run {run_id}'s logged overrides are not a list of overrides")
    return list(logged)
