"""Make the team server's two accounts, idempotently: `python bootstrap_accounts.py`.

Run by the `mlflow-init` service of docker-compose.yml once the server is healthy, and by hand
after changing a password in `.env` (it resets both passwords to the environment's values).
Everything comes from the environment, nothing from the command line (which `ps` shows):

    MLFLOW_TRACKING_URI                              the server, e.g. http://mlflow:5000
    MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD   an admin (the one MLflow bootstraps)
    MLFLOW_SERVICE_USERNAME, MLFLOW_SERVICE_PASSWORD     the account that trains (scheduler, train)
    MLFLOW_VIEWER_USERNAME, MLFLOW_VIEWER_PASSWORD       the read-only account for people

The service account is not an admin: it gets EDIT on every experiment (log runs, metrics,
artifacts and models; it cannot delete experiments, change permissions or manage users), and
MANAGE on the experiments it creates (MLflow's rule for creators). The viewer gets READ on every
experiment and registered model, so it stays read-only even if `default_permission` is lowered.
MLflow lets any signed-in user create an experiment of their own; the viewer can do that, but it
cannot write into anyone else's (docs/deployment.md).
"""

from __future__ import annotations

import os
import sys

from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client
from mlflow.server.auth.client import AuthServiceClient

# (resource type, resource pattern, permission) per account; "*" is every resource of the type
SERVICE_GRANTS = (("experiment", "*", "EDIT"),)
VIEWER_GRANTS = (("experiment", "*", "READ"), ("registered_model", "*", "READ"))


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"bootstrap_accounts: {name} is not set (see .env.example)")
    return value


def ensure_user(client: AuthServiceClient, username: str, password: str) -> str:
    """Create `username`, or reset its password if it exists; never an admin. Returns what it
    did, for the log."""
    try:
        client.create_user(username, password)
        action = "created"
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_user_password(username, password)
        action = "password reset"
    client.update_user_admin(username, False)
    return action


def ensure_grant(
    client: AuthServiceClient, username: str, resource_type: str, pattern: str, permission: str
) -> None:
    """`username` holds exactly `permission` on `resource_type` `pattern`."""
    try:
        client.grant_user_permission(username, resource_type, pattern, permission)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.revoke_user_permission(username, resource_type, pattern)
        client.grant_user_permission(username, resource_type, pattern, permission)


def main() -> None:
    uri = _env("MLFLOW_TRACKING_URI")
    admin = _env("MLFLOW_TRACKING_USERNAME")
    _env("MLFLOW_TRACKING_PASSWORD")
    accounts = {
        "service": (_env("MLFLOW_SERVICE_USERNAME"), _env("MLFLOW_SERVICE_PASSWORD")),
        "viewer": (_env("MLFLOW_VIEWER_USERNAME"), _env("MLFLOW_VIEWER_PASSWORD")),
    }
    names = [admin] + [name for name, _ in accounts.values()]
    if len(set(names)) != len(names):
        sys.exit(f"bootstrap_accounts: admin, service and viewer need three names, got {names}")
    client: AuthServiceClient = get_app_client("basic-auth", tracking_uri=uri)
    grants = {"service": SERVICE_GRANTS, "viewer": VIEWER_GRANTS}
    for role, (username, password) in accounts.items():
        action = ensure_user(client, username, password)
        for resource_type, pattern, permission in grants[role]:
            ensure_grant(client, username, resource_type, pattern, permission)
        given = ", ".join(f"{p} on {t} {r}" for t, r, p in grants[role])
        print(f"{role} account {username!r}: {action}; {given}")


if __name__ == "__main__":
    main()
