"""A run's record is data, never an instruction: a rewritten config artifact or tag makes
`train.resume` and `reproduce` stop in one line, not unpickle, download or delete."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import yaml
from conftest import TINY, settings
from mlflow.tracking import MlflowClient

from pipeline.config import ConfigError
from pipeline.jobs.reproduction import reproduce
from pipeline.jobs.training import resumed_config, run
from pipeline.names import Artifact, Tag
from pipeline.tracking.store.connect import open_store


class _Planted:
    """What an attacker pickles: unpickling it runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _killed_run(tmp_path: Path, config: dict, tags: dict[str, str] | None = None) -> str:
    """A KILLED run whose logged config (and tags) someone with write access rewrote."""
    store = open_store(settings(*TINY).tracking)
    client = MlflowClient(store.uri)
    made = client.create_run(store.experiment_id, tags=tags or {})
    run_id = made.info.run_id
    client.log_text(run_id, yaml.safe_dump(config), Artifact.CONFIG)
    client.log_text(run_id, yaml.safe_dump([]), Artifact.OVERRIDES)
    client.set_terminated(run_id, "KILLED")
    return run_id


def _planted_pickle(tmp_path: Path) -> tuple[dict, Path]:
    marker = tmp_path / "owned"
    planted = tmp_path / "letters.pickle"
    planted.write_bytes(pickle.dumps(_Planted(marker)))
    config = settings(*TINY).model_dump(mode="json")
    config["data"] = settings("data=notmnist", "data.path=x").model_dump(mode="json")["data"]
    config["data"] |= {"path": str(planted), "format": "pickle", "allow_pickle": True}
    return config, marker


def test_resume_does_not_unpickle_what_a_rewritten_config_names(tmp_path: Path) -> None:
    config, marker = _planted_pickle(tmp_path)
    run_id = _killed_run(tmp_path, config)
    with pytest.raises(ConfigError, match="add data.allow_pickle=true to allow it"):
        run(settings(*TINY, f"train.resume={run_id}"), [f"train.resume={run_id}"])
    assert not marker.exists()


def test_reproduce_does_not_unpickle_what_a_rewritten_config_names(tmp_path: Path) -> None:
    config, marker = _planted_pickle(tmp_path)
    run_id = _killed_run(tmp_path, config)
    with pytest.raises(ConfigError, match="asks for data.allow_pickle=true"):
        reproduce(run_id, settings(*TINY).tracking)
    assert not marker.exists()


@pytest.mark.parametrize("key", ["/", "../../victim", "0" * 31 + "/"])
def test_a_checkpoint_tag_is_a_name_never_a_path(tmp_path: Path, key: str) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    tag = str(victim) if key == "/" else key
    run_id = _killed_run(tmp_path, settings(*TINY).model_dump(mode="json"), {Tag.CHECKPOINT: tag})
    cfg = settings(*TINY, f"train.resume={run_id}")
    store = open_store(cfg.tracking)
    with pytest.raises(ConfigError, match=r"its checkpoint tag: checkpoint key .* not a name"):
        resumed_config(store, cfg, [f"train.resume={run_id}"])
    assert (victim / "keep.txt").read_text() == "precious"


def test_a_linked_checkpoint_folder_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    key = "f" * 32
    (tmp_path / "mlruns" / "checkpoints").mkdir(parents=True)
    (tmp_path / "mlruns" / "checkpoints" / key).symlink_to(victim)
    run_id = _killed_run(tmp_path, settings(*TINY).model_dump(mode="json"), {Tag.CHECKPOINT: key})
    cfg = settings(*TINY, f"train.resume={run_id}")
    with pytest.raises(ConfigError, match="leads out of"):
        resumed_config(open_store(cfg.tracking), cfg, [f"train.resume={run_id}"])
    assert victim.is_dir()


def test_resume_takes_data_locations_and_refuses_other_settings(tmp_path: Path) -> None:
    run_id = _killed_run(tmp_path, settings(*TINY).model_dump(mode="json"))
    overrides = [f"train.resume={run_id}", "model.l2_beta=0.5"]
    cfg = settings(*TINY, *overrides)
    with pytest.raises(ConfigError, match=r"drop model.l2_beta=0.5 \(only data.allow_pickle"):
        resumed_config(open_store(cfg.tracking), cfg, overrides)
