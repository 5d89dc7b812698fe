"""The two lock files agree: uv.lock (what `make setup` installs, hashed) and requirements.lock
(the same pins for pip, which the train image installs with `-c`), exported from it by
`make lock`. A hand edit of one, or a `uv lock` without the export, fails here."""

from __future__ import annotations

import tomllib
from typing import Any

from conftest import PROJECT_ROOT


def _uv_lock() -> dict[str, dict[str, Any]]:
    with (PROJECT_ROOT / "uv.lock").open("rb") as f:
        return {p["name"]: p for p in tomllib.load(f)["package"]}


def _requirements_lock() -> dict[str, str]:
    pins = {}
    for line in (PROJECT_ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.split(";")[0].strip().partition("==")
            assert version, f"requirements.lock: {line!r} is not name==version"
            pins[name] = version
    return pins


def test_requirements_lock_is_uv_lock_exported() -> None:
    locked = {n: str(p["version"]) for n, p in _uv_lock().items() if n != "notmnist-pipeline"}
    assert _requirements_lock() == locked


def test_every_locked_download_has_its_hash() -> None:
    for name, package in _uv_lock().items():
        files = [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]
        if name == "notmnist-pipeline":  # the project itself, from the checkout
            assert not files
            continue
        assert files, name
        assert all(str(f["hash"]).startswith("sha256:") for f in files), name


def test_the_wheel_lists_every_package() -> None:
    """pyproject.toml lists the packages (conf/ is mapped into the wheel, so all must be
    listed): a new sub-package left out installs without its modules, found otherwise only
    by the slow wheel-install test."""
    listed = set(
        tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
            "packages"
        ]
    )
    found = {
        ".".join(p.parent.relative_to(PROJECT_ROOT).parts)
        for p in (PROJECT_ROOT / "pipeline").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
