"""docker-compose.yml and its images: valid Compose, safe by default, in step with the pinned
MLflow. No Docker engine here, so the file is read and interpolated the way compose does it."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from compose_env import (
    MissingVariableError,
    interpolate,
    load,
    required_variables,
    variables,
)

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
ENV_EXAMPLE = ROOT / ".env.example"

# What a team puts in .env: every secret compose asks for
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret-0123456789",
    "MLFLOW_ADMIN_PASSWORD": "admin-secret-0123456789",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-secret-0123456789",
    "MLFLOW_SERVICE_PASSWORD": "service-secret-0123456789",
    "MLFLOW_VIEWER_PASSWORD": "viewer-secret-0123456789",
}


def _compose(env: dict[str, str] | None = None) -> dict:
    return load(COMPOSE, SECRETS if env is None else env)


def _services(env: dict[str, str] | None = None) -> dict:
    return _compose(env)["services"]


def _dockerfiles() -> dict[str, Path]:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    return {
        name: ROOT / service["build"]["dockerfile"]
        for name, service in services.items()
        if "build" in service
    }


def _option(command: list[str], flag: str) -> str:
    [value] = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{flag}=")]
    return value


def test_interpolation_follows_the_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert (
        interpolate("$$SET ${SET} $SET ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d}", env) == "$SET x x d d "
    )
    assert interpolate("${SET:+alt}${EMPTY:+alt}${EMPTY+alt}", env) == "altalt"
    assert interpolate("${EMPTY?m}${SET:?m}", env) == "x"
    for text in ("${UNSET:?m}", "${EMPTY:?m}", "${UNSET?m}"):
        with pytest.raises(MissingVariableError, match="m"):
            interpolate(text, env)


def test_compose_file_matches_the_compose_spec() -> None:
    if not SCHEMA.exists():
        pytest.skip(f"Compose schema not found at {SCHEMA}")
    import jsonschema

    # the spec is draft-07 (its $schema URI lacks the '#' that jsonschema looks up)
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    validator.validate(yaml.safe_load(COMPOSE.read_text()))  # as written
    validator.validate(_compose())  # as compose runs it


def test_compose_refuses_to_start_without_each_secret() -> None:
    assert required_variables(COMPOSE.read_text()) == set(SECRETS)
    for name in SECRETS:
        for env in ({k: v for k, v in SECRETS.items() if k != name}, {**SECRETS, name: ""}):
            with pytest.raises(MissingVariableError, match=name):
                _compose(env)


def test_no_secret_is_written_in_the_repository() -> None:
    text = COMPOSE.read_text()
    # every password, key and credential-bearing variable is a reference to the environment
    for name, service in yaml.safe_load(text)["services"].items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if re.search("PASSWORD|SECRET", key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), (name, key, value)
    # and no URI carries a password: the database one comes from PGPASSWORD (libpq)
    for path in (COMPOSE, ROOT / "docker" / "basic_auth.ini", *_dockerfiles().values()):
        assert not re.search(r"://[^/@\s:]+:[^/@\s]+@", path.read_text()), path
    auth = configparser.ConfigParser()
    auth.read(ROOT / "docker" / "basic_auth.ini")
    assert "admin_password" not in auth["mlflow"]
    services = _services()
    assert services["mlflow"]["environment"]["PGPASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]


def test_env_file_is_ignored_and_the_example_lists_every_variable() -> None:
    def ignored(path: str) -> bool:
        found = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
        return found.returncode == 0

    assert ignored(".env")
    assert ignored(".env.production")
    assert not ignored(".env.example")
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in dockerignore  # never copied into an image by `COPY`
    example = dict(
        line.split("=", 1)
        for line in (
            raw.lstrip("# ").split(" ", 1)[0] for raw in ENV_EXAMPLE.read_text().split("\n")
        )
        if re.fullmatch(r"[A-Z_]+=\S*", line)
    )
    assert variables(COMPOSE.read_text()) <= set(example)
    for name in SECRETS:
        assert example[name] == "", f"{name} has a value in .env.example"


def test_ports_are_bound_to_loopback_unless_opted_in() -> None:
    published = {name: s.get("ports", []) for name, s in _services().items()}
    assert published.pop("mlflow") == ["127.0.0.1:5000:5000"]
    assert published.pop("serve") == ["127.0.0.1:5001:5001"]
    assert not any(published.values()), published  # the database is never published
    opted_in = _services(
        {**SECRETS, "MLFLOW_BIND": "0.0.0.0", "MLFLOW_PORT": "8080", "SERVE_BIND": "0.0.0.0"}
    )
    assert opted_in["mlflow"]["ports"] == ["0.0.0.0:8080:5000"]
    assert opted_in["serve"]["ports"] == ["0.0.0.0:5001:5001"]


@pytest.mark.parametrize("service", ["mlflow", "train"])
def test_images_run_as_a_non_root_user(service: str) -> None:
    lines = _dockerfiles()[service].read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, f"{service} image runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    # nothing after the last USER switches back, and the entrypoint is not a root wrapper
    assert not any(re.search(r"\b(sudo|gosu|su-exec)\b", line) for line in lines)


def test_images_are_pinned() -> None:
    bases = {}
    for service, dockerfile in _dockerfiles().items():
        [base] = [
            line.split()[1]
            for line in dockerfile.read_text().splitlines()
            if line.startswith("FROM ")
        ]
        bases[service] = base
    for name, service in _services().items():
        if "build" not in service:
            bases[name] = service["image"]
    for name, image in bases.items():
        # an exact release (major.minor.patch, or PostgreSQL's major.minor), never a floating tag
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+(\.\d+)?(-[a-z0-9]+)*", image), (name, image)
        if image.startswith("python:"):
            assert re.search(r":\d+\.\d+\.\d+-", image), (name, image)
    assert bases["mlflow"] == f"ghcr.io/mlflow/mlflow:v{version('mlflow')}"
    # the `auth` extra the server needs, at the versions this project locks
    # requirements.lock is exported from uv.lock: `name==version[ ; marker]`, names normalised
    locked = dict(
        line.split(";")[0].strip().split("==")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    dockerfile = _dockerfiles()["mlflow"].read_text()
    for package in ("Flask-WTF", "WTForms", "psycopg"):
        pinned = locked[package.lower()]
        assert f'"{package}{"[binary]" if package == "psycopg" else ""}=={pinned}"' in dockerfile


def test_train_image_installs_the_package_not_an_editable_checkout() -> None:
    dockerfile = _dockerfiles()["train"].read_text()
    assert re.search(r"pip install .*-c requirements\.lock \.(\s|$)", dockerfile)
    assert " -e " not in dockerfile


def test_auth_is_on_with_its_own_database() -> None:
    services = _services()
    command = services["mlflow"]["command"]
    assert _option(command, "--app-name") == "basic-auth"
    tracking_db = _option(command, "--backend-store-uri").rsplit("/", 1)[1]
    # the compose path to the auth config is where the image puts the committed file
    config_path = services["mlflow"]["environment"]["MLFLOW_AUTH_CONFIG_PATH"]
    assert f"COPY docker/basic_auth.ini {config_path}" in _dockerfiles()["mlflow"].read_text()
    auth = configparser.ConfigParser()
    auth.read(ROOT / "docker" / "basic_auth.ini")
    auth_uri = auth["mlflow"]["database_uri"]
    assert auth_uri.startswith("postgresql://")
    auth_db = auth_uri.rsplit("/", 1)[1]
    assert auth_db != tracking_db
    assert auth["mlflow"]["default_permission"] == "READ"
    # creating (an experiment, a registered model) needs USE on the workspace, given by role
    assert "--enable-workspaces" in command
    assert auth["mlflow"]["grant_default_workspace_access"] == "false"
    # the postgres image makes the auth database on first start, from the mounted folder
    init = {
        v.split(":")[0]: v.split(":")[1] for v in services["db"]["volumes"] if v.startswith("./")
    }
    assert init["./docker/initdb"] == "/docker-entrypoint-initdb.d"
    sql = "\n".join(p.read_text() for p in (ROOT / "docker" / "initdb").glob("*.sql"))
    assert re.search(rf"CREATE DATABASE {auth_db};", sql)


def test_clients_sign_in_as_the_service_account() -> None:
    services = _services()
    train = services["train"]["environment"]
    assert train == {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLFLOW_TRACKING_USERNAME": "trainer",
        "MLFLOW_TRACKING_PASSWORD": SECRETS["MLFLOW_SERVICE_PASSWORD"],
    }
    assert services["scheduler"]["environment"] == train  # the scheduler signs in the same way
    for client in ("train", "scheduler"):
        assert services[client]["depends_on"]["mlflow-init"]["condition"] == (
            "service_completed_successfully"
        )
    init = services["mlflow-init"]
    assert init["environment"]["MLFLOW_TRACKING_PASSWORD"] == SECRETS["MLFLOW_ADMIN_PASSWORD"]
    assert init["environment"]["MLFLOW_SERVICE_USERNAME"] == train["MLFLOW_TRACKING_USERNAME"]
    script = init["command"][-1]
    assert f"COPY docker/bootstrap_accounts.py {script}" in _dockerfiles()["mlflow"].read_text()
    command = services["mlflow"]["command"]
    assert "mlflow:5000" in _option(command, "--allowed-hosts").split(",")
