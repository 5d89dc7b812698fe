"""Fixed cost of a tracked run: `python -m pipeline` against the same training in plain Keras.

    .venv/bin/python bench/run_cost.py [--pairs 3] [--sweep-jobs 8] [--data PATH]

Issue 13: what does tracking add to a run beyond its training, and to a sweep beyond its
jobs' training? On the real notMNIST sample (../shared/data/notmnist-sample), into a
throw-away MLflow store and data cache:

1. Whole runs, taken in turn in one session so that both see the same machine: A, a tracked
   run (`python -m pipeline data=notmnist`, 10 epochs at batch 512, after one untimed run
   that makes the store and caches the decoded data), then B, bench/plain_keras.py (the same
   network and training with Keras alone, on the same splits, which the pipeline's loader
   writes to an npz beforehand), then a process that only imports TensorFlow and Keras (and
   one more with JAX hidden, as the pipeline imports TensorFlow). Prints the median walls,
   A/B, A's `seconds.*` phases (exit and the rest: wall minus the phases) and the import
   time counted from the process's start, next to A's `seconds.startup` (the issue's target:
   start-up within 1 s of the imports alone; `seconds.startup` itself starts a few tens of
   ms after the process, when the entry point is imported).
2. One sweep of `--sweep-jobs` jobs (basic launcher, 5 epochs, model.l2_beta varied): per
   job, the start-to-start cadence minus its `seconds.train` and `seconds.evaluate` (target:
   median <= 0.75 s); the sweep's wall split into all jobs' train+evaluate, those per-job
   overheads, and the fixed cost (start-up until the first job, the last job's logging, the
   comparison report and exit).

The bench's own process imports no TensorFlow, and MLflow only once everything is timed.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import write_results

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = ROOT.parent / "shared" / "data" / "notmnist-sample" / "notMNIST_sample.tar.gz"
PHASES = ("startup", "data", "build", "train", "evaluate", "logging", "logging_per_epoch")
EPOCHS, SWEEP_EPOCHS, BATCH = 10, 5, 512
EXPERIMENT = "notmnist"
PARENT_TAG = "mlflow.parentRunId"
PLAIN_OUTPUT = re.compile(r"test accuracy ([\d.]+) after (\d+) epochs")


def process_age() -> float:
    """Seconds since this process started, from the kernel's clocks (10 ms ticks): unlike a
    timer started by the program, it includes the interpreter's own start-up."""
    import os
    from pathlib import Path

    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()  # from field 3
    start_ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


# A process that imports what any Keras script imports, and says when it was done; and the
# same with JAX hidden, as the pipeline imports TensorFlow (where JAX is installed, TensorFlow
# imports it, and the plain script pays for that too).
_PROBE = f"{inspect.getsource(process_age)}\nimport tensorflow, keras\nprint(process_age())\n"
PROBES = {"import": _PROBE, "import_no_jax": "import sys\nsys.modules['jax'] = None\n" + _PROBE}


def write_npz(archive: str, out: str) -> None:
    """Load the data exactly as a run does (composed and validated config, the pipeline's
    loader and cache) and save its splits for the plain script. Run in a subprocess from the
    project root (see `whole_runs`), so that `pipeline` is this checkout's and stays out of the
    bench's process."""
    import numpy as np
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pipeline.config import config_dir, validate
    from pipeline.stages.data.notmnist import load_notmnist

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        composed = compose("config", overrides=["data=notmnist", f"data.path={archive}"])
    data = validate(OmegaConf.to_container(composed, resolve=True)).data
    dataset = load_notmnist(**data.model_dump(exclude={"source"}))
    splits = {
        f"{name}_{part}": getattr(split, part)
        for name, split in dataset.splits()
        for part in ("images", "labels")
    }
    np.savez(out, **splits)
    print(", ".join(f"{name} {len(split.labels)}" for name, split in dataset.splits()))


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """(wall seconds, stdout) of one command run from the project root; exits on failure."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        print(done.stderr, file=sys.stderr)
        sys.exit(f"exit status {done.returncode}: {' '.join(command)}")
    return wall, done.stdout


def l2_values(n: int) -> list[str]:
    """n distinct L2 betas for the sweep: 0, 1e-5, 3e-5, 1e-4, 3e-4, ..."""
    steps = (f"{m}e{e}" for e in itertools.count(-5) for m in (1, 3))
    return ["0", *itertools.islice(steps, n - 1)]


def median(values: list[float]) -> float:
    return statistics.median(values)


def whole_runs(
    archive: Path, scratch: Path, pairs: int, store_env: dict[str, str]
) -> dict[str, Any]:
    """Prepare the npz, warm up, then time A, B and the import probes in turn `pairs` times."""
    npz = scratch / "data.npz"
    loader = f"import sys; sys.path.insert(1, {str(BENCH)!r}); import run_cost; "
    loader += "run_cost.write_npz(*sys.argv[1:])"  # cwd first on sys.path: this `pipeline`
    _, sizes = timed([sys.executable, "-c", loader, str(archive), str(npz)], store_env)
    print(f"data: {sizes.strip()} images (written to {npz.name})")
    tracked = [
        *(sys.executable, "-m", "pipeline", "data=notmnist", f"data.path={archive}"),
        *(f"train.epochs={EPOCHS}", f"train.batch_size={BATCH}", "train.verbose=0"),
        f"hydra.run.dir={scratch / 'out'}",
    ]
    plain = [sys.executable, str(BENCH / "plain_keras.py"), str(npz)]
    plain += ["--epochs", str(EPOCHS), "--batch-size", str(BATCH)]
    user_env = {"TF_CPP_MIN_LOG_LEVEL": "2", **os.environ}  # what plain_keras.py sets itself

    warmup, _ = timed(tracked, store_env)
    print(f"warm-up tracked run (makes the store's tables): {warmup:.2f} s")
    runs: dict[str, list[dict[str, Any]]] = {"tracked": [], "plain": [], **{k: [] for k in PROBES}}
    for i in range(pairs):
        a, _ = timed(tracked, store_env)
        b, out = timed(plain, user_env)
        match = PLAIN_OUTPUT.search(out)
        if match is None:
            sys.exit(f"unexpected output of plain_keras.py: {out!r}")
        for probe, code in PROBES.items():
            r, age = timed([sys.executable, "-c", code], user_env)
            runs[probe].append({"wall": r, "from_start": float(age)})
        runs["tracked"].append({"wall": a})
        runs["plain"].append(
            {"wall": b, "test_accuracy": float(match[1]), "epochs_run": int(match[2])}
        )
        age = runs["import"][-1]["from_start"]
        print(f"pair {i + 1}/{pairs}: A {a:.2f} s, B {b:.2f} s, import {age:.2f} s")
    return {"warmup_wall": warmup, **runs}


def sweep(archive: Path, scratch: Path, jobs: int, store_env: dict[str, str]) -> dict[str, Any]:
    """Time one basic-launcher sweep of `jobs` jobs; its runs are read from the store later."""
    command = [
        *(sys.executable, "-m", "pipeline", "-m", "data=notmnist", f"data.path={archive}"),
        *(f"train.epochs={SWEEP_EPOCHS}", f"train.batch_size={BATCH}", "train.verbose=0"),
        f"model.l2_beta={','.join(l2_values(jobs))}",
        f"hydra.sweep.dir={scratch / 'multi'}",
    ]
    launched_ms = time.time() * 1000
    wall, _ = timed(command, store_env)
    print(f"sweep of {jobs} jobs: {wall:.1f} s")
    return {"launched_ms": launched_ms, "wall": wall}


def read_store(uri: str, result: dict[str, Any], sweep_result: dict[str, Any] | None) -> None:
    """Add the tracked runs' phases and the sweep's jobs from the store to the results."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    found = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    launched = sweep_result["launched_ms"] if sweep_result else float("inf")
    singles = [r for r in found if PARENT_TAG not in r.data.tags and r.info.start_time < launched]
    timed_runs = singles[1:]  # after the warm-up, in the order they ran
    if len(timed_runs) != len(result["tracked"]):
        sys.exit(f"expected {len(result['tracked'])} timed runs, the store has {len(timed_runs)}")
    for row, found_run in zip(result["tracked"], timed_runs, strict=True):
        metrics = found_run.data.metrics
        row["phases"] = {p: metrics[f"seconds.{p}"] for p in PHASES}
        row["exit_and_rest"] = row["wall"] - sum(row["phases"].values())
        row["test_accuracy"] = metrics["test_accuracy"]
        row["epochs_run"] = int(metrics["epochs_run"])
    if sweep_result is None:
        return
    children = [r for r in found if PARENT_TAG in r.data.tags and r.info.start_time >= launched]
    jobs = []
    for child in sorted(children, key=lambda r: r.info.start_time):
        metrics = child.data.metrics
        jobs.append(
            {
                "run_name": child.info.run_name,
                "status": child.info.status,
                "start_ms": child.info.start_time,
                "train": metrics.get("seconds.train", float("nan")),
                "evaluate": metrics.get("seconds.evaluate", float("nan")),
            }
        )
    for job, following in itertools.pairwise(jobs):
        job["cadence"] = (following["start_ms"] - job["start_ms"]) / 1000
        job["overhead"] = job["cadence"] - job["train"] - job["evaluate"]
    sweep_result["jobs"] = jobs


def print_runs(result: dict[str, Any]) -> dict[str, Any]:
    """The whole-run and start-up tables; returns their medians and ratios."""
    a = [r["wall"] for r in result["tracked"]]
    b = [r["wall"] for r in result["plain"]]
    summary: dict[str, Any] = {
        "tracked_wall": median(a),
        "plain_wall": median(b),
        "ratio_median_of_pairs": median([x / y for x, y in zip(a, b, strict=True)]),
        "ratio_of_medians": median(a) / median(b),
        "difference_median_of_pairs": median([x - y for x, y in zip(a, b, strict=True)]),
        **{f"{k}_from_start": median([r["from_start"] for r in result[k]]) for k in PROBES},
        "import_wall": median([r["wall"] for r in result["import"]]),
        "phases": {p: median([r["phases"][p] for r in result["tracked"]]) for p in PHASES},
        "exit_and_rest": median([r["exit_and_rest"] for r in result["tracked"]]),
    }
    for probe in PROBES:
        summary[f"startup_minus_{probe}"] = (
            summary["phases"]["startup"] - summary[f"{probe}_from_start"]
        )

    def walls(values: list[float]) -> str:
        return " ".join(f"{v:.2f}" for v in values)

    n = len(a)
    print(f"\nWhole runs, {EPOCHS} epochs at batch {BATCH}, {n} pairs taken in turn (A B A B ...)")
    print(f"{'':40s} {'median s':>9s}   each run")
    print(f"{'A  tracked (python -m pipeline)':40s} {median(a):9.2f}   {walls(a)}")
    print(f"{'B  plain Keras (bench/plain_keras.py)':40s} {median(b):9.2f}   {walls(b)}")
    print(f"{'A - B, median of pairs':40s} {summary['difference_median_of_pairs']:9.2f}")
    print(f"{'A / B, median of pairs':40s} {summary['ratio_median_of_pairs']:9.2f}x")
    print(f"{'A / B, ratio of medians':40s} {summary['ratio_of_medians']:9.2f}x")
    for name in ("tracked", "plain"):
        rows = result[name]
        accuracies = ", ".join(f"{r['test_accuracy']:.4f} ({r['epochs_run']} ep)" for r in rows)
        print(f"  {name} test accuracy: {accuracies}")

    print(f"\nTracked run (A), median of {n} timed runs")
    print(f"{'phase':24s} {'seconds':>8s} {'share':>7s}")
    wall = summary["tracked_wall"]
    for phase, seconds in summary["phases"].items():
        print(f"{phase:24s} {seconds:8.2f} {100 * seconds / wall:6.1f}%")
    rest = summary["exit_and_rest"]
    print(f"{'exit and the rest':24s} {rest:8.2f} {100 * rest / wall:6.1f}%")
    print(f"{'wall':24s} {wall:8.2f}")

    print(f"\nStart-up, median of {n}")
    startup = summary["phases"]["startup"]
    print(f"{'tracked run: seconds.startup':46s} {startup:6.2f} s")
    labels = {
        "import": "TF+Keras import, from process start",
        "import_no_jax": "  the same with JAX hidden (as the pipeline)",
    }
    for probe, label in labels.items():
        seconds, difference = summary[f"{probe}_from_start"], summary[f"startup_minus_{probe}"]
        print(f"{label:46s} {seconds:6.2f} s   startup - this: {difference:5.2f} s")
    print(f"{'TF+Keras import-only process, wall (with exit)':46s} {summary['import_wall']:6.2f} s")
    print("(target: startup within 1 s of the import alone)")
    return summary


def print_sweep(result: dict[str, Any]) -> dict[str, Any]:
    """The per-job table of the sweep; returns its overhead figures and fixed cost."""
    jobs = result["jobs"]
    print(f"\nSweep of {len(jobs)} jobs, basic launcher, {SWEEP_EPOCHS} epochs at batch {BATCH}")
    header = ("start s", "cadence s", "train s", "evaluate s", "overhead s")
    print(f"{'job':4s} {'run':12s} " + " ".join(f"{h:>10s}" for h in header))
    for i, job in enumerate(jobs):
        start = (job["start_ms"] - result["launched_ms"]) / 1000
        cells = [start, job.get("cadence"), job["train"], job["evaluate"], job.get("overhead")]
        shown = " ".join(f"{c:10.2f}" if c is not None else f"{'-':>10s}" for c in cells)
        print(f"{i:<4d} {job['run_name'][:12]:12s} {shown}")
    overheads = [j["overhead"] for j in jobs[:-1]]
    work = sum(j["train"] + j["evaluate"] for j in jobs)
    last = jobs[-1]
    before_first = (jobs[0]["start_ms"] - result["launched_ms"]) / 1000
    after_last = (result["wall"] - (last["start_ms"] - result["launched_ms"]) / 1000) - (
        last["train"] + last["evaluate"]
    )
    summary = {
        "overhead_median": median(overheads),
        "overhead_min": min(overheads),
        "overhead_max": max(overheads),
        "overhead_sum": sum(overheads),
        "wall": result["wall"],
        "train_evaluate_sum": work,
        "not_training": result["wall"] - work,
        "fixed_cost": before_first + after_last,
        "before_first_job": before_first,
        "after_last_job": after_last,
    }
    print(
        f"per-job overhead (cadence - train - evaluate), median of {len(overheads)}: "
        f"{summary['overhead_median']:.2f} s (min {summary['overhead_min']:.2f}, "
        f"max {summary['overhead_max']:.2f}; target <= 0.75 s)"
    )
    print(f"{'sweep wall':52s} {result['wall']:6.1f} s")
    print(f"{'  train+evaluate, all jobs':52s} {work:6.1f} s")
    print(f"{f'  per-job overhead, jobs 0-{len(jobs) - 2}':52s} {summary['overhead_sum']:6.1f} s")
    print(f"{'  fixed cost of the sweep':52s} {summary['fixed_cost']:6.1f} s")
    print(f"{'    start-up, until job 0 starts':52s} {before_first:6.1f} s")
    print(f"{'    last job besides train+evaluate, the report, exit':52s} {after_last:6.1f} s")
    if any(j["status"] != "FINISHED" for j in jobs):
        print("(some jobs did not finish: " + ", ".join(j["status"] for j in jobs) + ")")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="tracked/plain pairs to time")
    parser.add_argument("--sweep-jobs", type=int, default=8, help="jobs of the sweep (0: none)")
    parser.add_argument("--data", type=Path, default=DATA, help="notMNIST_sample.tar.gz")
    args = parser.parse_args()
    if args.pairs < 1 or args.sweep_jobs == 1 or args.sweep_jobs < 0:
        parser.error("--pairs must be >= 1, and --sweep-jobs 0 or >= 2 (a cadence needs two)")
    archive = args.data.resolve()
    if not archive.is_file():
        sys.exit(
            f"no data at {archive}: this bench trains on the real notMNIST sample, expected in "
            "../shared/data/notmnist-sample/ beside the project (or give --data PATH)"
        )

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="run_cost-") as name:
        scratch = Path(name)
        (scratch / "store").mkdir()
        uri = f"sqlite:///{scratch / 'store' / 'mlflow.db'}"
        store_env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": uri,
            "PIPELINE_CACHE_DIR": str(scratch / "cache"),
        }
        runs = whole_runs(archive, scratch, args.pairs, store_env)
        swept = sweep(archive, scratch, args.sweep_jobs, store_env) if args.sweep_jobs else None
        read_store(uri, runs, swept)
    load_after = os.getloadavg()

    summary = print_runs(runs)
    if swept is not None:
        swept["summary"] = print_sweep(swept)
    print(f"\nload average (1, 5, 15 min): before {load_before}, after {load_after}")
    write_results(
        "run_cost.json",
        {
            "load_average": {"before": load_before, "after": load_after},
            "data": str(archive),
            "settings": {
                "pairs": args.pairs,
                "epochs": EPOCHS,
                "batch_size": BATCH,
                "sweep_jobs": args.sweep_jobs,
                "sweep_epochs": SWEEP_EPOCHS,
            },
            "runs": runs,
            "summary": summary,
            "sweep": swept,
        },
    )


if __name__ == "__main__":
    main()
