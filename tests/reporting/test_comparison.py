"""The comparison itself, on runs as `mlflow.search_runs` returns them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.reporting.comparison import compare
from pipeline.reporting.figures import (
    CURVES_NAMED,
    curves_figure,
    heatmap_figure,
    label_digits,
    valid_test_figure,
)
from pipeline.reporting.render import html, markdown, report_title


def _runs(monitor: str = "val_loss") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run_id": ["a", "b", "c", "d"],
            "status": ["FINISHED", "FINISHED", "FAILED", "FINISHED"],
            "tags.mlflow.runName": ["ra", "rb", "rc", "rd"],
            "tags.error": [None, None, "DataError: boom", None],
            "params.model.l2_beta": ["0.0", "0.001", "0.01", "0.0"],
            "params.model.dropout_rate": ["0.0", "0.0", "0.5", "0.5"],
            "params.train.epochs": ["5", "5", "5", "5"],
            "params.tracking.run_name": ["x", "y", "z", "w"],
            "params.train.early_stopping.monitor": [monitor] * 4,
            "metrics.best_val_loss": [0.5, 0.3, np.nan, 0.4],
            "metrics.best_val_data_loss": [0.5, 0.3, np.nan, 0.35],
            "metrics.best_val_accuracy": [0.8, 0.9, np.nan, 0.95],
            "metrics.test_accuracy": [0.79, 0.88, np.nan, 0.93],
        }
    )


def test_varied_settings_and_order() -> None:
    comparison = compare(_runs())
    assert comparison.varied == ["model.l2_beta", "model.dropout_rate"]  # most values first
    assert comparison.table["run_id"].tolist() == ["d", "b", "a", "c"]  # accuracy, failed last
    assert comparison.sort_by == "best_val_accuracy"
    assert comparison.best["run_id"] == "d"
    assert comparison.label(comparison.best) == "model.l2_beta=0.0, model.dropout_rate=0.5"


def test_l2_run_with_higher_valid_accuracy_ranks_first_whatever_its_penalised_loss() -> None:
    """Keras' val_loss includes the L2 penalty: the L2 run's is far higher (0.69 against 0.23
    as measured in a 2x2 sweep) although it classifies the valid set better. The monitor that
    EarlyStopping used must not decide the ranking either."""
    runs = pd.DataFrame(
        {
            "run_id": ["plain", "l2", "l2_tie"],
            "status": ["FINISHED"] * 3,
            "params.model.l2_beta": ["0.0", "0.001", "0.01"],
            "params.train.early_stopping.monitor": ["val_loss"] * 3,
            "metrics.best_val_loss": [0.23, 0.69, 0.90],
            "metrics.best_val_data_loss": [0.25, 0.22, 0.24],
            "metrics.best_val_accuracy": [0.933, 0.937, 0.937],
            "metrics.test_accuracy": [0.93, 0.93, 0.94],
        }
    )
    for monitor in ("val_loss", "loss", "val_accuracy"):
        runs["params.train.early_stopping.monitor"] = monitor
        comparison = compare(runs)
        # same accuracy: the lower penalty-free loss first
        assert comparison.table["run_id"].tolist() == ["l2", "l2_tie", "plain"]
    text = markdown(comparison, {}, "Sweep")
    assert "ranked by `best_val_accuracy`" in text
    assert "`val_loss` includes the penalty" in text


def test_failures_carry_their_error() -> None:
    failures = compare(_runs()).failures
    assert failures[["run_id", "error"]].to_dict("records") == [
        {"run_id": "c", "error": "DataError: boom"}
    ]


def test_heatmap_over_two_settings_and_markdown() -> None:
    comparison = compare(_runs())
    fig = heatmap_figure(comparison)
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["model.l2_beta", "model.l2_beta"]
    assert [ax.get_xlabel() for ax in fig.axes[:2]] == ["model.dropout_rate"] * 2
    text = markdown(comparison, {"heatmap": "heatmap.png"}, "Sweep")
    assert "4 runs, 3 finished, 1 failed" in text
    assert "![heatmap](heatmap.png)" in text
    assert curves_figure(comparison) is None  # no histories without a client


def _search_runs(n: int = 20) -> pd.DataFrame:
    """A search's runs: every setting drawn afresh, so no two runs share a value."""
    rng = np.random.default_rng(0)
    valid = rng.uniform(0.85, 0.93, n)
    return pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(n)],
            "status": ["FINISHED"] * n,
            "tags.mlflow.runName": [f"trial {i}" for i in range(n)],
            "params.model.l2_beta": [str(v) for v in rng.uniform(1e-6, 1e-3, n)],
            "params.model.dropout_rate": [str(v) for v in rng.uniform(0.2, 0.6, n)],
            "params.train.learning_rate": [str(v) for v in rng.uniform(1e-4, 1e-2, n)],
            "metrics.best_val_data_loss": rng.uniform(0.2, 0.4, n),
            "metrics.best_val_accuracy": valid,
            "metrics.test_accuracy": valid - rng.uniform(0.0, 0.03, n),
        }
    )


def test_a_search_gets_a_valid_against_test_scatter_not_a_heatmap_and_readable_curves() -> None:
    """A heatmap of 20 runs that share no values is a diagonal of unreadable cells, and a
    legend of every run's settings covers the curves (as a real 50-trial study showed)."""
    comparison = compare(_search_runs())
    assert heatmap_figure(comparison) is None
    scatter = valid_test_figure(comparison)
    assert scatter is not None
    assert scatter.axes[0].get_xlabel() == "valid accuracy (kept epoch)"
    assert len(scatter.axes[0].collections[0].get_offsets()) == 20
    best = comparison.best
    assert f"best: {best['run_name']}" in [t.get_text() for t in scatter.axes[0].texts]

    epochs = pd.RangeIndex(1, 4, name="epoch")
    history = pd.DataFrame(
        {m: [0.5, 0.6, 0.7] for m in ("accuracy", "val_accuracy", "data_loss", "val_data_loss")},
        index=epochs,
    )
    comparison.curves = dict.fromkeys(comparison.table["run_id"], history)
    curves = curves_figure(comparison)
    labels = curves.axes[1].get_legend().get_texts()
    assert [t.get_text() for t in labels] == list(comparison.table["run_name"][:CURVES_NAMED])
    assert len(curves.axes[1].lines) == 2 * 20


def test_a_grid_gets_a_heatmap_and_no_scatter() -> None:
    assert valid_test_figure(compare(_runs())) is None


def _close_grid() -> pd.DataFrame:
    """A 2 x 2 grid whose accuracies differ by less than a thousandth, as on 687 images."""
    runs = _runs()
    runs["status"] = "FINISHED"
    runs["run_id"] = [f"{c}" * 32 for c in "abcd"]
    runs["metrics.best_val_accuracy"] = [0.9745, 0.9752, 0.9760, 0.9738]
    runs["metrics.test_accuracy"] = [0.97, 0.971, 0.972, 0.973]
    return runs


def test_the_report_table_starts_with_settings_and_results_and_ends_with_a_short_run_id() -> None:
    comparison = compare(_close_grid())
    text = markdown(comparison, {}, report_title("sweep 2026-12-06 21:00:01", comparison))
    header = next(line for line in text.splitlines() if "model.l2_beta" in line and "|" in line)
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[:4] == [
        "model.l2_beta",
        "model.dropout_rate",
        "best_val_accuracy",
        "best_val_data_loss",
    ]
    assert cells[-3:] == ["run_name", "status", "run"]
    assert "| " + "c" * 8 + " |" in text.replace("  ", " ")  # the id's first 8 characters
    assert "c" * 32 not in text
    page = html(comparison, {}, "t")
    assert page.index("<th>best_val_accuracy</th>") < page.index("<th>run</th>")


def test_the_title_names_the_sweep_once_and_what_it_varies() -> None:
    comparison = compare(_close_grid())
    title = report_title("sweep 2026-12-06 21:00:01", comparison)
    assert title == "Sweep 2026-12-06 21:00:01: 4 runs over model.l2_beta, model.dropout_rate"
    assert markdown(comparison, {}, title).startswith(f"# {title}\n")
    assert "Sweep sweep" not in title


def test_heatmap_labels_never_read_the_same_for_two_colours_and_say_what_an_image_is() -> None:
    assert label_digits(np.array([0.9745, 0.9752, 0.976])) == 4  # 3 digits: 0.975 twice
    assert label_digits(np.array([0.5, 0.75, np.nan])) == 3
    comparison = compare(_close_grid())
    comparison.split_sizes = {"valid": 687, "test": 687}
    fig = heatmap_figure(comparison)
    cells = [t.get_text() for t in fig.axes[0].texts]
    assert len(set(cells)) == 4, cells
    caption = fig._supxlabel.get_text()
    assert caption.startswith("One image is 1/687 = 0.00146 of valid accuracy (0.146 points)")
    assert caption in markdown(comparison, {"heatmap": "heatmap.png"}, "t")
    comparison.split_sizes = {}
    assert "One image" not in markdown(compare(_close_grid()), {"heatmap": "h.png"}, "t")


def test_split_sizes_come_from_the_datasets_every_run_logged(store_uri: str) -> None:
    """The same valid split in every run: its size; test splits of two sizes: none."""
    import mlflow
    from mlflow.data.numpy_dataset import from_numpy
    from mlflow.tracking import MlflowClient

    from pipeline.reporting.comparison import find_runs
    from pipeline.tracking.store.connect import connect

    store = connect(store_uri, "sizes")
    for test_size in (30, 40):
        with mlflow.start_run(experiment_id=store.experiment_id):
            for context, size in (("valid", 20), ("test", test_size)):
                images, labels = np.zeros((size, 28, 28), np.uint8), np.zeros(size, np.uint8)
                dataset = from_numpy(images, targets=labels, name=f"x-{context}-{size}")
                mlflow.log_input(dataset, context=context)
            mlflow.log_metrics({"best_val_accuracy": 0.5, "test_accuracy": 0.5})
    comparison = compare(find_runs([store.experiment_id], None), MlflowClient(store_uri))
    assert comparison.split_sizes == {"valid": 20}


def test_an_experiments_report_compares_training_runs_only(store_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    from pipeline.names import Kind, Tag
    from pipeline.reporting.comparison import find_runs
    from pipeline.tracking.store.connect import connect

    store = connect(store_uri, "mixed")
    client = MlflowClient(store_uri)
    kept = set()
    for kind in (*Kind.ALL, None):
        run = client.create_run(store.experiment_id, tags={Tag.KIND: kind} if kind else {})
        client.set_terminated(run.info.run_id)
        if kind in (*Kind.COMPARABLE, None):  # None: recorded before the kind tag
            kept.add(run.info.run_id)
    assert set(find_runs([store.experiment_id], None)["run_id"]) == kept
