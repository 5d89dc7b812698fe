"""Screenshots of a sweep in MLflow's UI, for docs/comparing.md: run a small sweep into a temporary
store, start the MLflow UI on it, and let headless Chromium (Playwright) open the pages a user
opens, saving PNGs into docs/images/.

    python docs/make_screenshots.py                    # sweep, then screenshots (minutes)
    python docs/make_screenshots.py --store /tmp/s     # reuse the store of an earlier call

Needs Chromium (`apt-get install chromium`; or --chromium PATH) and the `screenshots` extra
(`pip install -e '.[screenshots]'`: Playwright's Python client; no browser download).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
# the README's sweep, on fewer letters and epochs so that it takes a few minutes on 2 cores
SWEEP = (
    "-m",
    "model.l2_beta=0,1e-4,1e-3",
    "model.dropout_rate=0,0.5",
    "data.train_size=3000",
    "data.valid_size=600",
    "data.test_size=600",
    "train.epochs=5",
    "tracking.log_model=false",
    "tracking.experiment=sweep-demo",
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def run_sweep(store: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    subprocess.run(
        [sys.executable, "-m", "pipeline", *SWEEP, f"hydra.sweep.dir={store / 'sweep'}"],
        cwd=ROOT,
        env=env,
        check=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_ui(store: Path, port: int) -> subprocess.Popen[bytes]:
    """`mlflow ui` as `make ui` starts it, on a free loopback port; returns once it answers."""
    ui = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return ui
        except OSError:
            time.sleep(0.5)
    ui.kill()
    raise RuntimeError("the MLflow UI did not start within 120 s")


def ids(store: Path) -> tuple[str, str]:
    """The sweep's experiment id and its parent run id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep-demo")
    assert experiment is not None, "no sweep in this store: run without --store first"
    [parent] = client.search_runs([experiment.experiment_id], "tags.sweep = 'true'")
    return experiment.experiment_id, parent.info.run_id


def shoot(page: Any, url: str, out: Path, wait_for: str, settle: float = 3.0) -> None:
    page.goto(url)
    try:
        page.get_by_text(wait_for).first.wait_for(timeout=60_000)
        close = page.get_by_role("button", name="Close")  # the assistant's side panel
        if close.count():
            close.first.click()
    finally:  # on a time-out too: the picture shows what came instead
        time.sleep(settle)  # charts animate in
        page.screenshot(path=str(out))
    print(f"{out.relative_to(ROOT)}: {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--store", type=Path, help="a folder with a store made by this script")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    store = args.store or Path(tempfile.mkdtemp(prefix="notmnist-screenshots-"))
    if not (store / "mlflow.db").exists():
        run_sweep(store)
    experiment_id, parent_id = ids(store)
    IMAGES.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ui = start_ui(store, port)
    base = f"http://127.0.0.1:{port}/#/experiments/{experiment_id}"
    try:
        with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
            browser = p.chromium.launch_persistent_context(
                profile,
                executable_path=args.chromium,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 800},
            )
            page = browser.new_page()
            # 1. the link a sweep prints: its runs, key metrics as columns, best first
            view = f"{base}/runs?viewStateShareKey=compare&workflowType=machine_learning"
            shoot(page, view, IMAGES / "runs-table.png", "best_val_accuracy")
            # 2. the parent's HTML report, rendered by the artifact viewer
            shoot(
                page,
                f"{base}/runs/{parent_id}/artifacts/comparison/report.html"
                "?workflowType=machine_learning",
                IMAGES / "report.png",
                "comparison/report.html",
                settle=4,
            )
            # 3. the view's charts: parallel coordinates of L2 and dropout, valid accuracy
            shoot(
                page,
                f"{view}&compareRunsMode=CHART",
                IMAGES / "parallel-coordinates.png",
                "Parallel Coordinates",
                settle=4,
            )
            browser.close()
    finally:
        ui.terminate()
        ui.wait(timeout=30)


if __name__ == "__main__":
    main()
