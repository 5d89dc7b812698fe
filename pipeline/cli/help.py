"""`notmnist <command> --help`, made from the command's typed config so that it cannot drift:
every setting with its default (composed from conf/, where defaults are written), what it
takes (the schema's types, bounds and choices) and what it does (the schema's descriptions),
then the command's examples and exit codes."""

from __future__ import annotations

import textwrap
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from pipeline.cli.commands import Command
from pipeline.config.paths import config_dir

_WIDTH = 92
_BOUNDS = (
    (annotated_types.Ge, ">=", "ge"),
    (annotated_types.Gt, ">", "gt"),
    (annotated_types.Le, "<=", "le"),
    (annotated_types.Lt, "<", "lt"),
)


def command_help(command: Command) -> str:
    schema = command.schema_class()
    defaults = _defaults(command, schema)
    parts = [
        f"notmnist {command.name}: {command.summary}",
        f"Usage: {command.usage}",
        _wrap(command.about) if command.about else "",
    ]
    if command.groups:
        groups = _groups(command.groups, defaults)
        parts.append(f"Config groups (group=option; the default first):\n{groups}")
    parts.append("Settings (key=value; the default after '='):\n" + _settings(command, schema))
    parts.append("Examples:\n" + "\n".join(f"  {e}" for e in command.examples))
    codes = "\n".join(f"  {code:<4} {meaning}" for code, meaning in command.exit_codes)
    parts.append(f"Exit codes:\n{codes}")
    return "\n\n".join(p for p in parts if p)


def settings_keys(command: Command) -> list[str]:
    """Every key the help lists (for the test that holds it to the composed config)."""
    return [key for key, _, _ in _rows_of(command, command.schema_class())]


def _defaults(command: Command, schema: type[BaseModel]) -> dict[str, Any]:
    if command.config is None:
        return {}
    from pipeline.config.compose import compose_tree

    return compose_tree(command.config)


def _settings(command: Command, schema: type[BaseModel]) -> str:
    lines = []
    for key, default, field in _rows_of(command, schema):
        if key.startswith("\n"):  # a heading: the settings of another option of a group
            lines.append(f"  {key.strip()}")
            continue
        shown = "(required)" if default is PydanticUndefined else _show(default)
        lines.extend(
            textwrap.wrap(
                f"{key} = {shown}", _WIDTH, initial_indent="  ", subsequent_indent=" " * 6
            )
        )
        about = field.description or ""
        allowed = _allowed(field.annotation, field.metadata)
        text = f"{about} [{allowed}]" if allowed else about
        lines.extend(textwrap.wrap(text, _WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)


def _rows_of(command: Command, schema: type[BaseModel]) -> Iterator[tuple[str, Any, Any]]:
    """(key, default, field) per setting; a group's other options follow as headings."""
    defaults = _defaults(command, schema)
    yield from _rows(schema, defaults, "", command, alternatives=True)


def _rows(
    schema: type[BaseModel],
    tree: Mapping[str, Any],
    prefix: str,
    command: Command,
    alternatives: bool = False,
) -> Iterator[tuple[str, Any, Any]]:
    have_defaults = command.config is not None
    for name, field in schema.model_fields.items():
        key = f"{prefix}{name}"
        value = tree.get(name) if have_defaults else field.default
        members = _models(field.annotation)
        if len(members) > 1 and isinstance(field.discriminator, str):  # data=synthetic|notmnist
            tag = field.discriminator
            chosen = (value or {}).get(tag)
            for member in members:
                own = typing.get_args(member.model_fields[tag].annotation)[0]
                if own == chosen:
                    yield from _rows(member, value or {}, f"{key}.", command)
            if alternatives and command.config is not None:
                for member in members:
                    own = typing.get_args(member.model_fields[tag].annotation)[0]
                    if own != chosen:
                        other = _compose_option(command, name, own)
                        yield f"\nWith {name}={own}:", None, None
                        yield from _rows(member, other.get(name, {}), f"{key}.", command)
        elif members and not _is_mapping(field.annotation):
            inner = value if isinstance(value, Mapping) else {}
            if not have_defaults and isinstance(value, BaseModel):
                inner = value.model_dump()
            yield from _rows(members[0], inner, f"{key}.", command)
        else:
            yield key, value, field


def _compose_option(command: Command, group: str, option: str) -> dict[str, Any]:
    from pipeline.config.compose import compose_tree

    assert command.config is not None
    return compose_tree(command.config, [f"{group}={option}"])


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation is, or is a union (or Annotated) of."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models(arg))
    return found


def _is_mapping(annotation: Any) -> bool:
    return typing.get_origin(annotation) is dict or any(
        _is_mapping(a) for a in typing.get_args(annotation) if not isinstance(a, type | str)
    )


def _allowed(annotation: Any, metadata: list[Any]) -> str:
    """What a setting takes: its choices, or its type with its bounds."""
    literals = _literals(annotation)
    optional = type(None) in _flat_args(annotation)
    if literals:
        shown = " | ".join(str(v) for v in literals)
        return f"{shown} | null" if optional else shown
    bounds = [*metadata, *_annotated_metadata(annotation)]
    kinds = [t.__name__ for t in _flat_args(annotation) if t in (int, float, bool, str)]
    kind = " or ".join(dict.fromkeys(kinds)) or _type_name(annotation)
    limits = [
        f"{sign} {_number(getattr(bound, attribute))}"
        for bound in bounds
        for cls, sign, attribute in _BOUNDS
        if isinstance(bound, cls)
    ]
    text = f"{kind} {', '.join(limits)}".strip()
    return f"{text}, or null" if optional else text


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return f"list of {_allowed(typing.get_args(annotation)[0], [])}"
    if origin in (typing.Annotated,):
        return _type_name(typing.get_args(annotation)[0])
    return getattr(annotation, "__name__", str(annotation))


def _flat_args(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Annotated:
        return _flat_args(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [t for a in typing.get_args(annotation) for t in _flat_args(a)]
    return [annotation]


def _literals(annotation: Any) -> list[Any]:
    return [
        v
        for t in _flat_args(annotation)
        if typing.get_origin(t) is Literal
        for v in typing.get_args(t)
    ]


def _annotated_metadata(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *meta = typing.get_args(annotation)
        found = [m for m in meta if not isinstance(m, type)]
        for item in meta:  # pydantic's Field(...) inside Annotated carries its own metadata
            found.extend(getattr(item, "metadata", []))
        return [*found, *_annotated_metadata(inner)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _annotated_metadata(a)]
    return []


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _show(value: Any) -> str:
    """A default as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        items = [_show(v) for v in value]
        if len(items) > 4:
            return f"[{', '.join(items[:2])}, ... ({len(items)} items)]"
        return f"[{', '.join(items)}]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(value) + "}"
    return _number(value) if isinstance(value, float) else str(value)


def _groups(groups: tuple[str, ...], defaults: Mapping[str, Any]) -> str:
    """A command's config groups (conf/<group>/) and their options, the default first."""
    rows = []
    for group in groups:
        options = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
        if group == "hydra/launcher":  # Hydra's own launchers beside ours
            options = ["basic (one job after another)", "parallel (two at a time)", "joblib"]
        elif group == "experiment":
            options = ["none", *options]
        chosen = _chosen(group, defaults)
        if chosen in options:
            options = [chosen, *(o for o in options if o != chosen)]
        rows.append(f"  {group}: {', '.join(options)}")
    return "\n".join(rows)


def _chosen(group: str, defaults: Mapping[str, Any]) -> str | None:
    node: Any = defaults
    for part in group.split("/"):
        node = node.get(part) if isinstance(node, Mapping) else None
    if isinstance(node, Mapping):
        for key in ("source", "name", "study"):
            if isinstance(node.get(key), str):
                return str(node[key])
    return None


def _wrap(text: str) -> str:
    return textwrap.fill(text, _WIDTH)
