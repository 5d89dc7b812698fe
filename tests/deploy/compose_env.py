"""Compose's variable interpolation, for tests on machines without `docker compose`.

The rules of the Compose Specification (interpolation.md): `$VAR`, `${VAR}`, `$$` for a literal
dollar, `${VAR:-default}` / `${VAR-default}` (default when unset or empty / when unset),
`${VAR:?message}` / `${VAR?message}` (refuse to go on), `${VAR:+alt}` / `${VAR+alt}`. Applied to
every string value, never to keys, after YAML parsing: what `docker compose config` does before
it creates anything, so a file that fails here fails `docker compose up` the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_TOKEN = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\})"
)


class MissingVariableError(ValueError):
    """A `${VAR:?message}` whose variable is missing: compose stops with `message`."""


def _substitute(match: re.Match[str], env: Mapping[str, str]) -> str:
    if match["escaped"]:
        return "$"
    if match["plain"]:
        return env.get(match["plain"], "")
    name, op, arg = match["name"], match["op"], match["arg"] or ""
    value = env.get(name)
    missing = value is None or (op is not None and op.startswith(":") and value == "")
    if op is None:
        return value or ""
    if op.endswith("-"):
        return arg if missing else value or ""
    if op.endswith("?"):
        if missing:
            raise MissingVariableError(f"required variable {name} is missing a value: {arg}")
        return value or ""
    return "" if missing else arg  # "+"


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return _TOKEN.sub(lambda m: _substitute(m, env), node)
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    return node


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return []


def _tokens(text: str) -> list[re.Match[str]]:
    """The references in a compose file's values (comments are not read)."""
    return [m for s in _strings(yaml.safe_load(text)) for m in _TOKEN.finditer(s)]


def variables(text: str) -> set[str]:
    """Every variable a compose file reads."""
    return {m["plain"] or m["name"] for m in _tokens(text) if not m["escaped"]}


def required_variables(text: str) -> set[str]:
    """The variables without which compose refuses to start (`${VAR:?...}`)."""
    return {m["name"] for m in _tokens(text) if m["op"] == ":?"}


def load(path: Path, env: Mapping[str, str]) -> dict:
    """The compose file at `path` as compose sees it with environment `env`."""
    return interpolate(yaml.safe_load(path.read_text()), env)
