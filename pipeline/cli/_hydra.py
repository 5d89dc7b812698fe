"""What every Hydra entry point does before Hydra parses its command line."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from pipeline.config import ConfigError, check_override_keys


def checked_main(
    hydra_main: Callable[[], Any],
    schema: type[BaseModel] | None = None,
    check: Callable[[Sequence[str]], None] | None = None,
) -> None:
    """Reject unknown `key=value` overrides in one line naming the allowed keys (exit 2;
    Hydra refuses them too, but without saying what is allowed), then run `hydra_main`.
    `check` replaces the schema's check (a command whose keys are not those of conf/)."""
    try:
        if check is None:
            check_override_keys(sys.argv[1:], schema)
        else:
            check(sys.argv[1:])
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    hydra_main()
