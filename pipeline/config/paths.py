"""Where the app finds its config and keeps its files, from a source checkout or installed.

A run from a source checkout keeps its store and cache in the checkout, whatever the shell's
folder (as it always has); an installed app keeps them in the folder it was started from;
`$PIPELINE_HOME` overrides both. Relative paths in the config are taken from there too.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
_CHECKOUT = PACKAGE_DIR.parent


def is_source_checkout() -> bool:
    """True when the package runs from the project's own tree (an editable install or
    `python -m` in the checkout), not from a wheel in site-packages."""
    return (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "conf").is_dir()


def config_dir() -> Path:
    """The Hydra config: `conf/` of the checkout, or the copy shipped in the wheel
    (`pipeline/conf`, built from the same folder)."""
    packaged = PACKAGE_DIR / "conf"
    return packaged if packaged.is_dir() else _CHECKOUT / "conf"


def project_home() -> Path:
    """$PIPELINE_HOME, else the source checkout, else the current working folder."""
    if home := os.environ.get("PIPELINE_HOME"):
        return Path(home).expanduser().resolve()
    return _CHECKOUT if is_source_checkout() else Path.cwd()
