"""Pipeline overhead: where the wall time of a full default run goes.

    .venv/bin/python bench/overhead.py [--runs 3]

Runs `python -m pipeline` (the default config: synthetic letters, 1024-unit MLP, 10 epochs)
`--runs` times into a throw-away MLflow store and data cache: the first run renders the
dataset, the later ones find it cached. Each run records its phases as `seconds.*` metrics;
this prints their medians over the cached runs, the first run's data time, the whole wall
time, and MLflow's share of training time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_results

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("startup", "data", "build", "train", "evaluate", "logging", "logging_per_epoch")


def one_run(store: Path, cache: Path, extra: list[str]) -> tuple[float, dict[str, float]]:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{store / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PIPELINE_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "train.verbose=0",
            f"hydra.run.dir={store / 'out'}",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("notmnist")
    [latest] = client.search_runs(
        [experiment.experiment_id], order_by=["start_time DESC"], max_results=1
    )
    return wall, {p: latest.data.metrics[f"seconds.{p}"] for p in PHASES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        store, cache = Path(scratch) / "store", Path(scratch) / "cache"
        runs = [one_run(store, cache, args.overrides) for _ in range(args.runs)]
    first_wall, first = runs[0]
    cached = runs[1:] or runs
    walls = [w for w, _ in cached]
    median = {p: statistics.median(r[p] for _, r in cached) for p in PHASES}
    wall = statistics.median(walls)
    print(f"\nDefault run, median of {len(cached)} runs with cached data")
    print(f"(the first run, rendering the data: {first_wall:.1f} s)")
    print(f"{'phase':20s} {'seconds':>8s} {'share':>7s}")
    for phase in PHASES:
        print(f"{phase:20s} {median[phase]:8.2f} {100 * median[phase] / wall:6.1f}%")
    other = wall - sum(median.values())
    print(f"{'exit and the rest':20s} {other:8.2f} {100 * other / wall:6.1f}%")
    print(f"{'wall':20s} {wall:8.2f}")
    print(f"first run's data phase (rendering 24,000 letters): {first['data']:.2f} s")
    per_epoch = 100 * median["logging_per_epoch"] / median["train"]
    everything = 100 * (median["logging"] + median["logging_per_epoch"]) / median["train"]
    print(f"MLflow per-epoch metric logging: {per_epoch:.1f}% of training time")
    print(f"all MLflow logging (params, data card, figures, model...): {everything:.1f}% of train")
    write_results(
        "overhead.json",
        {
            "overrides": args.overrides,
            "first_run": {"wall": first_wall, **first},
            "cached_runs": [{"wall": w, **r} for w, r in cached],
            "median": {"wall": wall, **median},
        },
    )


if __name__ == "__main__":
    main()
