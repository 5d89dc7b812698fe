"""HTTP serving: `notmnist serve` against `mlflow models serve`, then promotions
and rollbacks under load.

    .venv/bin/python bench/serve.py [--seconds 8] [--rounds 2] [--promotions 10]

One throw-away store holds the default network (`mlp`, 1,024 hidden units; untrained weights
cost the same to run), logged as the pipeline logs it, twice (versions 1 and 2, alias
`champion`). Each server in turn (A B A B: one at a time, so that they never share the two
cores) serves `models:/notmnist@champion` and gets the same threaded client: each thread
keeps one connection and sends the same pre-encoded request (rendered letters as JSON
integers) back to back, for `--seconds` after one second of warm-up, at 1 and 32 images per
request and 1 and 16 threads. Then `pipeline.serve` (alias read every `--poll-seconds`) takes
`--promotions` promotions and as many rollbacks while 4 threads send requests throughout:
the time from each alias move to the first answer from the version it names, and every
failed request. The machine's load average is printed with the table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import write_results

ROOT = Path(__file__).resolve().parents[1]

CELLS = [(1, 1), (1, 16), (32, 1), (32, 16)]  # (images per request, client threads)


def make_store(folder: Path) -> str:
    """Two versions of the default network in a SQLite store under `folder`, champion = 1."""
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient

    from pipeline.config.compose import default_config
    from pipeline.jobs.training import model_arguments
    from pipeline.stages.data import CLASSES, IMAGE_SHAPE
    from pipeline.stages.model import build_model
    from pipeline.tracking.models.classifier import log_keras_model

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    for _ in range(2):
        with mlflow.start_run():
            network = build_model(**model_arguments(default_config(), len(CLASSES), IMAGE_SHAPE))
            model_uri = log_keras_model(network, np.zeros((2, 28, 28), dtype=np.uint8))
        mlflow.register_model(model_uri, "notmnist")
    MlflowClient(uri).set_registered_model_alias("notmnist", "champion", "1")
    return uri


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(name: str, store: str, port: int, folder: Path, poll_seconds: float) -> subprocess.Popen:
    """One server on a free loopback port; returns once /ping answers 200."""
    venv = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": f"{venv}:{os.environ['PATH']}"}
    if name == "mlflow models serve":
        command = [str(venv / "mlflow"), "models", "serve", "-m", "models:/notmnist@champion"]
        command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    else:
        command = [sys.executable, "-m", "pipeline", "serve", f"port={port}"]
        command += [f"poll_seconds={poll_seconds}"]
    log = (folder / f"{port}.log").open("w")
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((folder / f"{port}.log").read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{name} did not answer /ping")


@dataclass
class Client:
    """Threads that each send `body` back to back on one keep-alive connection."""

    port: int
    body: bytes
    threads: int
    latencies: list[float] = field(default_factory=list)
    versions: list[tuple[float, str | None]] = field(default_factory=list)  # (answered, version)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    recording: threading.Event = field(default_factory=threading.Event)

    def _send(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Content-Type": "application/json"}
        while not self.stop.is_set():
            sent = time.perf_counter()
            try:
                connection.request("POST", "/invocations", self.body, headers)
                answer = connection.getresponse()
                data = answer.read()
                ok = answer.status == 200 and data.startswith(b'{"predictions":')
                version = answer.getheader("X-Model-Version")
            except (OSError, http.client.HTTPException) as exc:
                ok, data, version = False, str(exc).encode(), None
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            done = time.perf_counter()
            if not self.recording.is_set():
                continue
            if ok:
                self.latencies.append(done - sent)
                self.versions.append((done, version))
            else:
                self.failures.append(data[:200].decode(errors="replace"))
        connection.close()

    def __enter__(self) -> Client:
        self._pool = [threading.Thread(target=self._send) for _ in range(self.threads)]
        for thread in self._pool:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._pool:
            thread.join()


def request_body(images: int) -> bytes:
    from pipeline.config.compose import default_config
    from pipeline.config.schema import SyntheticDataConfig
    from pipeline.stages.data.synthetic import render_letters

    data = default_config().data
    assert isinstance(data, SyntheticDataConfig)
    pixels, _ = render_letters(images, seed=7, fonts=["DejaVuSans.ttf"], **data.distortions())
    return json.dumps({"inputs": pixels.tolist()}).encode()


def cell(port: int, images: int, threads: int, seconds: float) -> dict[str, float]:
    with Client(port, request_body(images), threads) as client:
        time.sleep(1.0)  # warm-up: connections made, first passes traced
        client.recording.set()
        started = time.perf_counter()
        time.sleep(seconds)
        client.recording.clear()
        elapsed = time.perf_counter() - started
    latencies = sorted(client.latencies)
    n = len(latencies)
    return {
        "images": images,
        "clients": threads,
        "requests_per_s": n / elapsed,
        "images_per_s": n * images / elapsed,
        "p50_ms": 1000 * latencies[n // 2] if n else float("nan"),
        "p99_ms": 1000 * latencies[min(n - 1, int(n * 0.99))] if n else float("nan"),
        "failed": len(client.failures),
    }


def throughput(store: str, folder: Path, seconds: float, rounds: int) -> list[dict]:
    rows: dict[tuple[str, int, int], list[dict[str, float]]] = {}
    for _ in range(rounds):
        for name in ("mlflow models serve", "pipeline.serve"):
            port = free_port()
            proc = start(name, store, port, folder, 10)
            try:
                for images, threads in CELLS:
                    result = cell(port, images, threads, seconds)
                    rows.setdefault((name, images, threads), []).append(result)
                    print(name, result, flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    table = []
    for (name, _, _), results in rows.items():
        merged = {k: statistics.median(r[k] for r in results) for k in results[0]}
        table.append({"server": name, **merged, "failed": sum(r["failed"] for r in results)})
    return table


def promotions(store: str, folder: Path, moves: int, poll_seconds: float) -> dict:
    """`moves` promotions (1 -> 2) and as many rollbacks (2 -> 1) under continuous load."""
    from mlflow.tracking import MlflowClient

    random.seed(0)
    registry = MlflowClient(store)
    port = free_port()
    proc = start("pipeline.serve", store, port, folder, poll_seconds)
    delays: list[float] = []
    try:
        with Client(port, request_body(1), 4) as client:
            client.recording.set()
            time.sleep(1.0)
            for target in ["2", "1"] * moves:
                moved = time.perf_counter()
                registry.set_registered_model_alias("notmnist", "champion", target)
                while True:
                    seen = [t for t, v in client.versions[-50:] if v == target and t > moved]
                    if seen:
                        delays.append(min(seen) - moved)
                        break
                    if time.perf_counter() - moved > poll_seconds + 120:
                        raise RuntimeError(f"version {target} never answered")
                    time.sleep(0.05)
                # the next move at a random point of the poll cycle, as a retrain's would come
                time.sleep(random.uniform(0.5, 0.5 + poll_seconds))
        answered = len(client.latencies)
        failed = len(client.failures)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    loads = [line for line in (folder / f"{port}.log").read_text().splitlines() if " -> " in line]
    return {
        "moves": len(delays),
        "poll_seconds": poll_seconds,
        "delay_s": {
            "median": statistics.median(delays),
            "max": max(delays),
            "min": min(delays),
        },
        "answered": answered,
        "failed": failed,
        "failures": client.failures[:5],
        "swap_log": loads[-3:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--promotions", type=int, default=10)
    parser.add_argument("--poll-seconds", type=float, default=2.0)
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = make_store(folder)
        table = [] if args.skip_throughput else throughput(store, folder, args.seconds, args.rounds)
        moves = promotions(store, folder, args.promotions, args.poll_seconds)
    load_after = os.getloadavg()
    print("\n| server | images/request | clients | requests/s | images/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(
            f"| {r['server']} | {r['images']:.0f} | {r['clients']:.0f} | "
            f"{r['requests_per_s']:,.0f} | {r['images_per_s']:,.0f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} |"
        )
    print(f"\npromotions and rollbacks under load: {json.dumps(moves, indent=2)}")
    print(f"load average before {load_before}, after {load_after}")
    write_results(
        "serve.json",
        {"throughput": table, "promotions": moves, "load_average": [load_before, load_after]},
    )


if __name__ == "__main__":
    main()
