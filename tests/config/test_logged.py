"""A logged config is a record, not an instruction: what `reproduce` and `train.resume` may
take from it, and what only the person's command line may grant."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import settings

from pipeline.config import ConfigError
from pipeline.config.logged import check_given, from_record, logged_overrides, read_record

RUN = "0123456789abcdef0123456789abcdef"


def _logged(**data: object) -> dict:
    tree = settings("data=notmnist", "data.path=/data/sample.tar.gz").model_dump(mode="json")
    tree["data"] |= data
    return tree


def _tracking():
    return settings("tracking.experiment=now").tracking


def test_a_logged_pickle_needs_the_command_lines_opt_in() -> None:
    logged = _logged(path="/tmp/planted.pickle", format="pickle", allow_pickle=True)
    with pytest.raises(ConfigError) as info:
        from_record(logged, RUN, {}, _tracking())
    assert str(info.value) == (
        f"run {RUN}'s logged config asks for data.allow_pickle=true (loading "
        "/tmp/planted.pickle as a pickle runs the code in it): add data.allow_pickle=true "
        "to allow it"
    )
    granted = from_record(logged, RUN, {"data.allow_pickle": True}, _tracking())
    assert granted.data.allow_pickle is True


def test_a_logged_download_needs_the_command_lines_opt_in() -> None:
    logged = _logged(path=None, url="http://attacker.example/x.tar.gz")
    with pytest.raises(ConfigError, match=r"downloads data.url=http://attacker.example/x.tar.gz: "):
        from_record(logged, RUN, {}, _tracking())
    url = "http://attacker.example/x.tar.gz"
    assert from_record(logged, RUN, {"data.url": url}, _tracking()).data.url == url
    local = from_record(logged, RUN, {"data.path": "/copy.tar.gz"}, _tracking())
    assert local.data.path == "/copy.tar.gz"  # a local copy needs no download


def test_where_the_pipeline_writes_never_comes_from_a_record() -> None:
    logged = _logged(cache_dir="/etc")
    logged["tracking"] |= {"uri": "http://attacker.example", "artifact_location": "/etc"}
    logged["tracking"]["log_model"] = False
    cfg = from_record(logged, RUN, {}, _tracking())
    assert cfg.data.cache_dir is None
    assert cfg.tracking.artifact_location is None
    assert cfg.tracking.experiment == "now"  # this command's tracking settings
    assert cfg.tracking.uri != "http://attacker.example"
    assert cfg.tracking.log_model is False  # the run's own choice of what it records


def test_logged_allow_pickle_is_dropped_and_logged_values_are_validated() -> None:
    cfg = from_record(_logged(allow_pickle=False), RUN, {}, _tracking())
    assert cfg.data.allow_pickle is False
    with pytest.raises(ConfigError, match="data.train_size=1.5"):
        from_record(_logged(train_size=1.5), RUN, {}, _tracking())
    with pytest.raises(ConfigError, match="not a mapping"):
        from_record(["data"], RUN, {}, _tracking())


def test_only_data_locations_may_be_given() -> None:
    check_given({"data.path": "/x", "data.allow_pickle": True}, "reproduce")
    with pytest.raises(ConfigError, match=r"reproduce reruns the run's own config: model.l2_beta"):
        check_given({"model.l2_beta": 0.1}, "reproduce")


def test_records_are_bounded_plain_data(tmp_path: Path) -> None:
    big = tmp_path / "config.yaml"
    big.write_text("x: " + "a" * (2 << 20))
    with pytest.raises(ConfigError, match="more than a logged config can be"):
        read_record(big, "config.yaml")
    code = tmp_path / "code.yaml"
    code.write_text("!!python/object/apply:os.system ['touch owned']")
    with pytest.raises(ConfigError, match="not readable YAML"):
        read_record(code, "config.yaml")
    assert logged_overrides(["a=1"], RUN) == ["a=1"]
    with pytest.raises(ConfigError, match="not a list of overrides"):
        logged_overrides({"a": 1}, RUN)
