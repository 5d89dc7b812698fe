"""The package's layers import only downward (README, Layout): every import statement in
pipeline/, at the top of a module or inside a function, under TYPE_CHECKING or not."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

# Lowest first: a module may import its own layer and those below it.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset(
        {"pipeline", "pipeline.names", "pipeline.errors", "pipeline.config", "pipeline.process"}
    ),
    frozenset({"pipeline.stages"}),
    frozenset({"pipeline.tracking"}),
    frozenset({"pipeline.reporting"}),
    frozenset({"pipeline.serving"}),
    frozenset({"pipeline.jobs"}),
    frozenset({"pipeline.cli", "pipeline.__main__"}),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
PACKAGES = {name for name, p in MODULES.items() if p.name == "__init__.py"}


def layer(module: str) -> int:
    """The layer of a module: that of its longest prefix named in LAYERS."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        for rank, members in enumerate(LAYERS):
            if prefix in members:
                return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports(module: str) -> list[tuple[int, str]]:
    """(line, module) of every pipeline module that `module` imports."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package
                package = module if module in PACKAGES else module.rpartition(".")[0]
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            for alias in node.names:  # `from pipeline import process` imports a module
                name = f"{base}.{alias.name}"
                found.append((node.lineno, name if name in MODULES else base))
    return [(line, name) for line, name in found if name.split(".")[0] == "pipeline"]


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        layer(module)


def test_imports_go_only_downward() -> None:
    upward = [
        f"{module} ({_name(layer(module))}) line {line}: {name} ({_name(layer(name))})"
        for module in MODULES
        for line, name in imports(module)
        if layer(name) > layer(module)
    ]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_tracking_uses_only_what_stages_export() -> None:
    """Below tracking, the stages' packages are their interface (`pipeline.stages.data`), not
    the modules inside them (the data card, the loaders)."""
    inside = [
        f"{module} line {line}: {name}"
        for module in MODULES
        if module.startswith("pipeline.tracking")
        for line, name in imports(module)
        if name.startswith("pipeline.stages") and name not in PACKAGES
    ]
    assert not inside, "tracking imports the stages' internals:\n" + "\n".join(inside)


def _name(rank: int) -> str:
    return "/".join(sorted(m.removeprefix("pipeline.") for m in LAYERS[rank]))


def test_the_scan_sees_upward_imports(tmp_path: Path) -> None:
    """What a violation looks like to the scan: an import inside a function, of a higher
    layer, and a relative one."""
    source = "def f():\n    from pipeline.reporting import figures\n    from ...cli import main\n"
    fake = "pipeline.tracking.recording.fake"
    MODULES[fake] = tmp_path / "fake.py"
    MODULES[fake].write_text(source)
    try:
        found = imports(fake)
    finally:
        del MODULES[fake]
    assert found == [(2, "pipeline.reporting.figures"), (3, "pipeline.cli.main")]
    assert all(layer(name) > layer(fake) for _, name in found)
