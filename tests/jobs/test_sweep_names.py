"""Sweep run names: the swept values, short enough for the UI's run-name column."""

from __future__ import annotations

from pipeline.jobs.sweep import run_name


def test_common_keys_get_short_aliases_others_their_last_part() -> None:
    assert run_name(["model.l2_beta=0.001", "model.dropout_rate=0.5"]) == "l2=0.001 drop=0.5"
    assert run_name(["train.learning_rate=0.1", "+data.fonts=[a.ttf]"]) == "lr=0.1 fonts=[a.ttf]"
    assert run_name(["model=logreg", "train.batch_size=32"]) == "model=logreg batch=32"


def test_keys_whose_short_names_clash_stay_in_full() -> None:
    assert run_name(["a.seed=1", "b.seed=2", "model.hidden_units=[8]"]) == (
        "a.seed=1 b.seed=2 units=[8]"
    )
