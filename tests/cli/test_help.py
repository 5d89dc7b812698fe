"""`notmnist --help` and `notmnist <command> --help` tell the truth: every command listed, and
every setting of every command's config in its help, with its default and a description."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from conftest import cli

from pipeline.cli.commands import COMMANDS
from pipeline.cli.help import command_help, settings_keys
from pipeline.config.compose import compose_tree


def _keys(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every leaf key of a composed config; a mapping of searched settings is one key."""
    keys = []
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and key != "search.params":
            keys.extend(_keys(value, f"{key}."))
        else:
            keys.append(key)
    return keys


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_setting_of_a_command_is_in_its_help(name: str) -> None:
    command = COMMANDS[name]
    text = command_help(command)
    listed = settings_keys(command)
    if command.config is not None:
        composed = [k for k in _keys(compose_tree(command.config)) if not k.startswith("hydra.")]
        # the other options of a group (data=notmnist) are listed too, under their heading
        assert set(composed) <= set(listed), set(composed) - set(listed)
    for key in (k for k in listed if not k.startswith("\n")):
        assert f"  {key} = " in text, key
    assert "Examples:\n  notmnist" in text
    assert "Exit codes:\n  0 " in text
    assert text.count("\n  notmnist ") >= 2  # two examples at least


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_setting_has_a_description(name: str) -> None:
    from pydantic import BaseModel

    def walk(model: type[BaseModel], prefix: str) -> None:
        for field_name, field in model.model_fields.items():
            assert field.description, f"{prefix}{field_name} has no description"
            for arg in [field.annotation, *getattr(field.annotation, "__args__", ())]:
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg, f"{prefix}{field_name}.")

    walk(COMMANDS[name].schema_class(), "")


def test_the_overview_lists_every_command_in_a_line() -> None:
    overview = cli("--help")
    assert overview.returncode == 0, overview.stderr
    for name, command in COMMANDS.items():
        assert f"  {name:<11}  {command.summary}\n" in overview.stdout
    assert cli("help").stdout == overview.stdout


def test_an_unknown_command_is_a_config_error() -> None:
    result = cli("retrian")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("config error: no command 'retrian': notmnist has ")
