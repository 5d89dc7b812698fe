"""Search overhead: what a study spends besides training, and what a second worker buys.

    .venv/bin/python bench/search.py [--trials 4] [--no-postgres] [overrides...]

Runs `notmnist search` on a space of equal trials (bench/conf/search/equal.yaml: one
fixed value, so every trial trains the same network) into a throw-away MLflow store:

1. one worker on the embedded journal storage, 2. one worker on PostgreSQL (a database this
script creates and drops; skipped without PostgreSQL on 127.0.0.1:5432), 3. two local workers
on the journal storage.

Per trial, overhead = `seconds.trial` (the trial's wall time in its worker: taking the trial
under the study's lock, the run's set-up and logging, pruning bookkeeping, telling Optuna)
minus `seconds.train` and `seconds.evaluate`; its share of `seconds.trial` is printed with
where it went. A worker's start (imports, decoding the data once, joining the study) is
counted apart, as the command's wall time minus its trials.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from common import write_results

ROOT = Path(__file__).resolve().parents[1]
SPACES = Path(__file__).resolve().parent / "conf"
PG = "postgresql://postgres@127.0.0.1:5432"
# a default run (the 1,024-unit MLP on the embedded letters, 10 epochs, model logged);
# `data.train_size=5000 train.epochs=3` on the command line for small trials
TRIAL = ("train.verbose=0",)
PHASES = ("startup", "data", "build", "logging", "logging_per_epoch")


def study(scratch: Path, name: str, trials: int, extra: list[str]) -> dict[str, Any]:
    """Run one study; return its wall time and per-trial figures."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PIPELINE_CACHE_DIR": str(scratch / "cache")}
    args = [
        f"hydra.searchpath=[file://{SPACES}]",
        "search=equal",
        f"search.study={name}",
        f"search.n_trials={trials}",
        "search.pruner=none",
        "search.rerun_top=0",  # trials only: the best's reruns over seeds are not trials
        f"hydra.run.dir={scratch / 'out' / name}",
        *TRIAL,
        *extra,
    ]
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pipeline", "search", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - start
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, f"tags.`search.study` = '{name}'")
    metrics = [r.data.metrics for r in runs if "seconds.trial" in r.data.metrics]
    trial = [m["seconds.trial"] for m in metrics]
    train = [m["seconds.train"] + m["seconds.evaluate"] for m in metrics]
    overhead = [t - w for t, w in zip(trial, train, strict=True)]
    return {
        "name": name,
        "wall": wall,
        "trials": len(metrics),
        "trial_seconds": statistics.mean(trial),
        "train_evaluate_seconds": statistics.mean(train),
        "overhead_seconds": statistics.mean(overhead),
        "overhead_share": sum(overhead) / sum(trial),
        "phases": {p: statistics.mean(m.get(f"seconds.{p}", 0.0) for m in metrics) for p in PHASES},
        "outside_trials": wall - sum(trial) / max(1, _workers(extra)),
    }


def _workers(extra: list[str]) -> int:
    given = [int(a.split("=", 1)[1]) for a in extra if a.startswith("search.workers=")]
    return given[-1] if given else 1


def postgres_database() -> str | None:
    try:
        import psycopg

        name = f"bench_search_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except Exception as exc:
        print(f"(no PostgreSQL: {exc})")
        return None
    return f"{PG}/{name}"


def drop(database: str) -> None:
    import psycopg

    name = database.rsplit("/", 1)[1]
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every trial")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        rows.append(study(root, "journal_1", args.trials, args.overrides))
        database = None if args.no_postgres else postgres_database()
        if database:
            try:
                storage = [f"search.storage={database}"]
                rows.append(study(root, "postgres_1", args.trials, [*args.overrides, *storage]))
            finally:
                drop(database)
        two = [*args.overrides, "search.workers=2"]
        rows.append(study(root, "journal_2", args.trials, two))

    print(f"\n{args.trials} equal trials per study, each a default run {' '.join(args.overrides)}")
    head = f"{'study':12s} {'wall s':>7s} {'trial s':>8s} {'train+eval':>10s} {'overhead':>9s}"
    print(f"{head} {'share':>6s} {'outside trials s':>17s}")
    for r in rows:
        print(
            f"{r['name']:12s} {r['wall']:7.1f} {r['trial_seconds']:8.2f} "
            f"{r['train_evaluate_seconds']:10.2f} {r['overhead_seconds']:9.2f} "
            f"{100 * r['overhead_share']:5.1f}% {r['outside_trials']:17.1f}"
        )
    print("mean seconds per trial by phase (the rest of the overhead: the run's own start/end,")
    print("the study's lock and Optuna):")
    for r in rows:
        print(f"  {r['name']:12s} " + ", ".join(f"{p} {v:.2f}" for p, v in r["phases"].items()))
    one, two = rows[0], rows[-1]
    print(f"two workers / one worker, wall time: {two['wall'] / one['wall']:.2f}")
    write_results("search.json", {"trials": args.trials, "rows": rows})


if __name__ == "__main__":
    main()
