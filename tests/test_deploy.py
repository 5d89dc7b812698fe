"""docker-compose.yml: valid Compose, and in step with the pinned MLflow (no Docker engine here)."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest
import yaml
from conftest import PROJECT_ROOT, SHARED_SAMPLE

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
SCHEMA = SHARED_SAMPLE.parents[1] / "schemas" / "compose-spec.json"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_matches_the_compose_spec() -> None:
    if not SCHEMA.exists():
        pytest.skip(f"Compose schema not found at {SCHEMA}")
    import jsonschema

    # the spec is draft-07 (its $schema URI lacks the '#' that jsonschema looks up)
    jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).validate(_compose())


def test_server_image_runs_the_pinned_mlflow() -> None:
    dockerfile = (PROJECT_ROOT / "docker" / "mlflow.Dockerfile").read_text()
    assert f"ghcr.io/mlflow/mlflow:v{version('mlflow')}" in dockerfile


def test_services_wire_together() -> None:
    services = _compose()["services"]
    assert services["train"]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    command = services["mlflow"]["command"]
    assert "--backend-store-uri=postgresql://mlflow:mlflow@db:5432/mlflow" in command
    assert any(arg.startswith("--allowed-hosts=") and "mlflow:5000" in arg for arg in command)
    for service in ("mlflow", "train"):
        dockerfile = PROJECT_ROOT / services[service]["build"]["dockerfile"]
        assert dockerfile.exists(), dockerfile
