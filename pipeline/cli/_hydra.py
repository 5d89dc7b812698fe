"""Commands whose settings Hydra composes from conf/: the one way they hand Hydra their
arguments and get its errors back as the project's one-line config errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from pipeline.config import ConfigError, check_override_keys, config_dir
from pipeline.config.compose import one_line
from pipeline.errors import Abort

T = TypeVar("T")

# Hydra's flags that take the next argument as their value (`--info` takes one of these)
VALUE_FLAGS = frozenset(
    {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn"}
    | {"--config-dir", "-cd", "--experimental-rerun"}
)
INFO_VALUES = frozenset({"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"})


def with_override(args: Sequence[str], extra: Sequence[str]) -> list[str]:
    """`args` with `extra` overrides among the user's own: Hydra's parser takes overrides as
    one run of positionals, so an override after the user's flags (`x=1 --cfg job`) would be
    refused, and one before them splits `--cfg job x=1`. It goes after the first override,
    or last when there is none."""
    for i, arg in enumerate(args):
        value_of_flag = i > 0 and (
            args[i - 1] in VALUE_FLAGS or (args[i - 1] in {"--info", "-i"} and arg in INFO_VALUES)
        )
        if not arg.startswith("-") and not value_of_flag:
            return [*args[: i + 1], *extra, *args[i + 1 :]]
    return [*args, *extra]


def run_hydra(
    config: str,
    task: Callable[[Any], T],
    args: Sequence[str],
    schema: type[BaseModel] | None = None,
    check: Callable[[Sequence[str]], None] | None = None,
) -> T | None:
    """Compose `conf/<config>.yaml` with `args` as Hydra's command line and run `task` on it
    (once, or per job of a `-m` sweep); returns what `task` returned (None for a sweep).

    Unknown keys and options are refused first in one line naming what is allowed (Hydra
    refuses them too, without saying what is); Hydra's own errors (an option that does not
    exist, a key of another option) come back as ConfigError, exit 2, not as Hydra's
    multi-line report with exit 1. Errors of `task` itself go to the kernel unchanged."""
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    (check or (lambda a: check_override_keys(a, schema)))(args)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors instead of exiting 1
    result: list[T] = []
    folder, _, name = config.rpartition("/")
    path = config_dir() / folder if folder else config_dir()

    raised: list[BaseException] = []

    @hydra.main(version_base="1.3", config_path=str(path), config_name=name)
    def main(cfg: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.MULTIRUN:  # each job says its own (train's)
            task(cfg)
            return
        try:
            result.append(task(cfg))
        except Exception as exc:  # the kernel's to say, not Hydra's ("Error executing job")
            raised.append(exc)

    # the job's name (its log file's, `train.log`) is the command's, not this module's
    named = any(a.startswith("hydra.job.name=") for a in args)
    name_it = [] if named else [f"hydra.job.name={task.__module__.rpartition('.')[2]}"]
    argv, sys.argv = sys.argv, [sys.argv[0], *with_override(args, name_it)]
    try:
        main()
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(one_line(exc)) from None
    except Abort as abort:  # a sweep's callback said so
        raise abort.error from None
    finally:
        sys.argv = argv
    if raised:
        raise raised[0]
    return result[0] if len(result) == 1 else None
