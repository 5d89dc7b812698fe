"""Throw-away git repositories for the tests of what a run records of its code and of
`reproduce at_commit=true`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

# a commit needs an author; no signing, whatever the account's git config says
GIT = ("git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "commit.gpgsign=false")
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        [*GIT, *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def small_repo(root: Path) -> Path:
    """A repository with one commit: pipeline/a.py, conf/c.yaml, README."""
    repo = root / "repo"
    (repo / "pipeline").mkdir(parents=True)
    (repo / "conf").mkdir()
    (repo / "pipeline" / "a.py").write_text("A = 1\n")
    (repo / "conf" / "c.yaml").write_text("c: 1\n")
    (repo / "README").write_text("read me\n")
    (repo / ".gitignore").write_text("__pycache__/\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    return repo


def pipeline_repo(root: Path) -> Path:
    """A repository of this project's code (pipeline/, conf/, pyproject.toml: a source
    checkout as `pipeline.config.paths` knows one), committed once."""
    repo = root / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(PROJECT_ROOT / "pipeline", repo / "pipeline", ignore=ignore)
    shutil.copytree(PROJECT_ROOT / "conf", repo / "conf", ignore=ignore)
    for name in ("pyproject.toml", ".gitignore"):
        shutil.copyfile(PROJECT_ROOT / name, repo / name)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "the project")
    return repo
