"""The app against real networks in a real registry (FastAPI's TestClient): MLflow's scoring
protocol, the logged model's 400s, the limits, health and version, the swap, the metrics."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient
from make_sources import letters
from mlflow.exceptions import MlflowException
from small_registry import Registry, Served

from pipeline.tracking.models.classifier import check_images


@pytest.fixture
def client(serving: Served) -> TestClient:
    return TestClient(serving.app)


def _post(client: TestClient, body: object, **kw: object):
    return client.post("/invocations", content=json.dumps(body), **kw)


def _probabilities(answer) -> np.ndarray:
    return np.asarray([p["probabilities"] for p in answer.json()["predictions"]])


def test_nothing_is_served_before_a_version_has_loaded(client: TestClient) -> None:
    for path in ("/ping", "/health", "/version"):
        assert client.get(path).status_code == 503
    answer = _post(client, {"inputs": letters(1)[0].tolist()})
    assert answer.status_code == 503
    assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_predictions_are_the_networks_with_the_version_that_answered(
    serving: Served, client: TestClient, registry: Registry
) -> None:
    serving.follower.poll()
    images, _ = letters(2)  # 20 letters
    expected = registry.networks["1"].predict(images, verbose=0)
    for key in ("inputs", "instances"):
        for pixels in (images.tolist(), images.astype(float).tolist()):
            answer = _post(client, {key: pixels})
            assert answer.status_code == 200, answer.text
            assert answer.headers["X-Model-Version"] == "1"
            np.testing.assert_allclose(_probabilities(answer), expected, rtol=1e-5, atol=1e-6)
            letters_said = [p["letter"] for p in answer.json()["predictions"]]
            assert letters_said == ["ABCDEFGHIJ"[i] for i in expected.argmax(axis=1)]
    one = _post(client, {"inputs": images[0].tolist()})  # a single 28x28 image
    np.testing.assert_allclose(_probabilities(one), expected[:1], rtol=1e-5, atol=1e-6)
    assert _post(client, {"inputs": []}).status_code == 400  # as the model: shape (0,)


@pytest.mark.parametrize(
    "pixels",
    [
        (letters(1)[0][:4] / 255.0).tolist(),  # scaled to 0-1
        (letters(1)[0][:4] * 0.5 + 0.25).tolist(),  # fractions
        letters(1)[0][:4].reshape(4, -1).tolist(),  # flat
        (letters(1)[0][:4].astype(int) - 1).tolist(),  # below 0
        (letters(1)[0][:4].astype(int) + 1).tolist(),  # above 255
        [[[True] * 28] * 28],  # not numbers
        [[["1"] * 28] * 28],
        [[[0] * 28] * 27 + [[0] * 27]],  # ragged
        [[[[0] * 28] * 28]],  # one bracket too many
    ],
    ids=["0-1", "fractions", "flat", "negative", "over-255", "booleans", "text", "ragged", "4d"],
)
def test_what_the_logged_model_refuses_gets_its_one_line_400(
    serving: Served, client: TestClient, pixels: list
) -> None:
    serving.follower.poll()
    with pytest.raises(MlflowException) as refused:
        check_images(pixels)
    answer = _post(client, {"inputs": pixels})
    assert answer.status_code == 400
    assert answer.json() == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": refused.value.message.splitlines()[0],
    }


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"{not json", "malformed JSON"),
        (b"[" * 5000, "nested too deeply"),
        (b'{"inputs": ' + b"[" * 20 + b"0" + b"]" * 20 + b"}", "nested too deeply"),
        (b'{"data": [1]}', "expected a JSON object"),
        (b'{"inputs": [1], "params": {}}', "expected a JSON object"),
        (b"[1, 2]", "got a JSON list"),
        (b"\xff\xfe", "malformed JSON"),
    ],
)
def test_malformed_requests_get_a_one_line_400(
    serving: Served, client: TestClient, body: bytes, said: str
) -> None:
    serving.follower.poll()
    answer = client.post("/invocations", content=body)
    assert answer.status_code == 400
    message = answer.json()["message"]
    assert said in message
    assert "\n" not in message
    assert len(message) < 300


def test_past_the_limits_is_413_and_other_media_types_415(
    serving: Served, client: TestClient
) -> None:
    serving.follower.poll()
    many = np.zeros((65, 28, 28), dtype=np.uint8).tolist()  # max_images=64
    answer = _post(client, {"inputs": many})
    assert answer.status_code == 413
    assert answer.json()["message"] == "65 images in one request; at most 64 (max_images)"
    big = b'{"inputs": [' + b" " * 400_001 + b"]}"  # max_body_bytes=400000
    answer = client.post("/invocations", content=big)
    assert answer.status_code == 413
    assert "max_body_bytes" in answer.json()["message"]
    # sent in chunks with no Content-Length: counted as it comes
    answer = client.post("/invocations", content=iter([b" " * 300_000] * 2))
    assert answer.status_code == 413
    answer = client.post("/invocations", content=b"x", headers={"Content-Type": "text/csv"})
    assert answer.status_code == 415
    assert _post(client, {"inputs": many[:64]}).status_code == 200


def test_version_health_and_metrics_say_what_serves(
    serving: Served, client: TestClient, registry: Registry
) -> None:
    serving.follower.poll()
    described = client.get("/version").json()
    assert described["model"] == "models:/notmnist@champion"
    assert described["model_uri"] == "models:/notmnist/1"
    assert described["version"] == "1"
    assert described["run_id"] == registry.run_ids["1"]
    assert described["loaded_at"].endswith("+00:00")
    assert client.get("/ping").status_code == 200
    assert client.get("/health").json() == {"status": "ok", "version": "1"}
    _post(client, {"inputs": letters(1)[0].tolist()})
    _post(client, {"inputs": "nonsense"})
    metrics = client.get("/metrics").text
    assert 'notmnist_serve_requests_total{path="/invocations",status="200"} 1.0' in metrics
    assert 'notmnist_serve_requests_total{path="/invocations",status="400"} 1.0' in metrics
    assert "notmnist_serve_images_total 10.0" in metrics
    assert "notmnist_serve_model_version 1.0" in metrics
    assert "notmnist_serve_prediction_seconds_count 2.0" in metrics
    client.get("/no/such/page")
    assert 'path="other",status="404"' in client.get("/metrics").text


def test_a_moved_alias_is_followed_and_a_broken_version_is_not_swapped_in(
    serving: Served, client: TestClient, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    images, _ = letters(1)
    serving.follower.poll()
    caplog.clear()
    registry.promote("2")
    with caplog.at_level(logging.INFO, logger="pipeline.serving"):
        serving.follower.poll()
    [swap] = [r.getMessage() for r in caplog.records if "->" in r.getMessage()]
    assert swap.startswith("serving models:/notmnist@champion: version 1 -> 2 (run ")
    assert "loaded in" in swap
    answer = _post(client, {"inputs": images.tolist()})
    assert answer.headers["X-Model-Version"] == "2"
    expected = registry.networks["2"].predict(images, verbose=0)
    np.testing.assert_allclose(_probabilities(answer), expected, rtol=1e-5, atol=1e-6)
    assert client.get("/version").json()["version"] == "2"

    caplog.clear()
    registry.promote("3")  # its files do not exist
    with caplog.at_level(logging.INFO, logger="pipeline.serving"):
        serving.follower.poll()
        serving.follower.poll()  # the same failure again: not logged twice
    [failed] = [r.getMessage() for r in caplog.records]
    assert failed.startswith("models:/notmnist@champion: version 3 failed to load: ")
    assert failed.endswith("; still serving version 2")
    assert "\n" not in failed
    assert _post(client, {"inputs": images.tolist()}).headers["X-Model-Version"] == "2"

    registry.client().delete_registered_model_alias("notmnist", "champion")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.serving"):
        serving.follower.poll()
    assert [r.getMessage() for r in caplog.records] == [
        "models:/notmnist@champion does not exist (no such model or alias); still serving version 2"
    ]
    registry.promote("1")  # a rollback
    serving.follower.poll()
    assert _post(client, {"inputs": images.tolist()}).headers["X-Model-Version"] == "1"
    assert "notmnist_serve_swaps_total 3.0" in client.get("/metrics").text


def test_the_page_and_its_files_load_nothing_from_elsewhere(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'src="app.js"' in page.text
    assert "http" not in page.text  # no scripts, styles or fonts from another origin
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        answer = client.get(path)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith(kind)
        assert "http" not in answer.text
    assert client.get("/docs").status_code == 404  # FastAPI's docs would load a CDN's scripts
