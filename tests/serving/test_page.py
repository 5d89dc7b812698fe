"""The page for people, in a real headless browser (Debian's Chromium through Playwright, as
docs/make_screenshots.py drives it): PNG letters dropped on it, and one drawn, come back as
the letter, ten bars and the version that answered, as the served network computes them.

`UPDATE_DOCS_IMAGES=1` also saves the screenshot as docs/images/serve-page.png."""

from __future__ import annotations

import base64
import importlib.util
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from make_sources import png
from mlflow.tracking import MlflowClient
from models_fixture import Champion, letters

from pipeline.serving.app import PATHS, Limits, create_app
from pipeline.serving.batching import Batcher
from pipeline.serving.follower import Follower
from pipeline.serving.metrics import Metrics
from pipeline.tracking.models.classifier import load_keras

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")

_DROP = """async ([files]) => {
  const transfer = new DataTransfer();
  for (const [name, data] of files) {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], name, { type: "image/png" }));
  }
  return transfer;
}"""


def _chromium_flags() -> list[str]:
    spec = importlib.util.spec_from_file_location(
        "make_screenshots", ROOT / "docs/make_screenshots.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.CHROMIUM_FLAGS)


@pytest.fixture
def site(champion: Champion, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Follower]]:
    """The app on the champion, under uvicorn on a loopback port in this process."""
    import mlflow
    import uvicorn
    from conftest import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", champion.store_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", champion.store_uri)  # (unset again after)
    # a test before this one in the same worker may have set MLflow's process-wide URIs (a
    # server it stopped since): the model loads from this champion's store
    mlflow.set_tracking_uri(champion.store_uri)
    mlflow.set_registry_uri(champion.store_uri)
    metrics = Metrics(PATHS)
    client = MlflowClient(champion.store_uri, registry_uri=champion.store_uri)
    follower = Follower(client, "notmnist", "champion", load_keras, metrics.swapped)
    follower.poll()
    batcher = Batcher(lambda: follower.current, 8, 256, metrics.batch)
    app = create_app(follower, batcher, metrics, Limits(max_images=64, max_body_bytes=2**20))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/", follower
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        server.should_exit = True
        thread.join(timeout=30)
        batcher.close()


def test_dropped_and_drawn_letters_show_letter_bars_and_version(
    site: tuple[str, Follower], tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no Chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    url, follower = site
    served = follower.current
    assert served is not None
    images, labels = letters(30, seed=5)
    probabilities = served.predict(images)
    correct = np.flatnonzero(probabilities.argmax(axis=1) == labels)
    right = [correct[labels[correct] == label][0] for label in np.unique(labels[correct])][:3]
    assert len(right) == 3  # three letters the network gets right: a clear picture
    files = [
        (f"{'ABCDEFGHIJ'[labels[i]]}-{i}.png", base64.b64encode(png(images[i])).decode())
        for i in right
    ]

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=_chromium_flags())
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url)
            page.get_by_text("Serving models:/notmnist@champion: version 1").wait_for(
                timeout=30_000
            )
            transfer = page.evaluate_handle(_DROP, [files])
            page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
            page.locator(".result").nth(2).wait_for(timeout=30_000)
            cards = page.locator(".result")
            assert cards.count() == 3
            for k, i in enumerate(right):  # the newest first: the last file on top
                card = cards.nth(len(right) - 1 - k)
                expected = probabilities[i]
                assert card.locator(".letter").inner_text() == "ABCDEFGHIJ"[expected.argmax()]
                assert card.locator(".version").inner_text() == "version 1"
                bars = card.locator(".bar")
                assert bars.count() == 10
                shown = [
                    float(bars.nth(j).get_attribute("data-probability") or "nan") for j in range(10)
                ]
                np.testing.assert_allclose(shown, expected, rtol=1e-5, atol=1e-6)
                assert (
                    card.locator(".bar.best").get_attribute("data-letter")
                    == "ABCDEFGHIJ"[expected.argmax()]
                )
                width = card.locator(".bar.best .fill").evaluate("e => e.style.width")
                assert width == f"{100 * expected.max():.1f}%"

            box = page.locator("#pad").bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + 80, box["y"] + 240)
            page.mouse.down()
            for x, y in ((140, 40), (200, 240), (170, 160), (110, 160)):  # an "A"
                page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
            page.mouse.up()
            page.click("#predict-drawing")
            page.locator(".result").nth(3).wait_for(timeout=30_000)
            drawn = page.locator(".result").first
            assert drawn.locator(".name").inner_text() == "drawing"
            assert drawn.locator(".letter").inner_text() in "ABCDEFGHIJ"
            assert errors == []
            shot = tmp_path / "serve-page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_DOCS_IMAGES") == "1":
        shutil.copyfile(shot, ROOT / "docs" / "images" / "serve-page.png")
