"""The best trial as an experiment file, written where the user says (`search.export`).

`search.export=<folder>` writes `<folder>/experiment/<study>_best.yaml`;
`search.export=<...>/experiment/<name>.yaml` names the file. Either way `<folder>` is a
config folder for Hydra, and the printed command runs the trial again as written:
`notmnist train --config-dir <folder> experiment=<name> <the study's data settings>`. Never
into the project's own `conf/` (inside the installed package, site-packages, for a wheel).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.config import TrackingConfig
from pipeline.config.schema import export_name
from pipeline.names import Artifact

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


@dataclass(frozen=True)
class Target:
    """Where the experiment file goes: the file, the config folder holding its
    `experiment/` folder, and the name `experiment=<name>` takes."""

    file: Path
    folder: Path
    name: str


def target(export: str, study: str) -> Target:
    """`search.export` as a file (relative paths from the working folder)."""
    path = Path(export).expanduser().absolute()
    name = export_name(export, study)
    if path.suffix == ".yaml":  # the schema checked that its folder is experiment/
        return Target(path, path.parent.parent, name)
    return Target(path / "experiment" / f"{name}.yaml", path, name)


def command(where: Target, data_overrides: Sequence[str]) -> str:
    """The command that trains the exported experiment, quoted for a POSIX shell."""
    args = ["notmnist", "train", "--config-dir", str(where.folder), f"experiment={where.name}"]
    return shlex.join([*args, *data_overrides])


def trial_config(client: MlflowClient, run_id: str, tracking: TrackingConfig) -> dict[str, Any]:
    """A trial run's logged config, read back as a record (validated, no opt-ins from it),
    with no `train.resume`: the exported experiment holds settings, never a run to act on."""
    from pipeline.config.logged import from_record, read_record

    path = Path(client.download_artifacts(run_id, Artifact.CONFIG))
    cfg = from_record(read_record(path, f"run {run_id}'s {Artifact.CONFIG}"), run_id, {}, tracking)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"resume": None})})
    return cfg.model_dump(mode="json")


def experiment_yaml(
    config: Mapping[str, Any],
    study: str,
    trial: int,
    params: Mapping[str, Any],
    why: str,
    where: Target | None,
    data_overrides: Sequence[str],
) -> str:
    """The best trial's model and train settings as an experiment file: the whole of both
    sections, so that it needs nothing else (data comes from the command line). `why` says
    what made it the best; the head says how to run it."""
    name = where.name if where else f"{study}_best"
    if where is not None:
        run = [f"# Run it: {command(where, data_overrides)}"]
    else:
        run = [
            f"# Not written to a config folder: search.export=<folder> writes it as "
            f"<folder>/experiment/{name}.yaml,",
            f"# run by notmnist train --config-dir <folder> experiment={name} [data settings]",
        ]
    head = [
        "# @package _global_",
        f"# The best trial ({trial}) of the study '{study}': {why}.",
        *run,
        "# Written by `notmnist search`; the searched values:",
        *(f"#   {k}: {v}" for k, v in params.items()),
    ]
    body = {
        "model": config["model"],
        "train": config["train"],
        "tracking": {"experiment": name},
    }
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False, default_flow_style=None)


def write(where: Target, text: str) -> None:
    """Write the file, making its folders."""
    where.file.parent.mkdir(parents=True, exist_ok=True)
    where.file.write_text(text)
