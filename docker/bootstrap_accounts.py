"""Make the team server's accounts and their roles, idempotently: `python bootstrap_accounts.py`.

Run by the `mlflow-init` service of docker-compose.yml once the server is healthy, and by hand
after changing a password in `.env` (it resets both passwords to the environment's values).
Everything comes from the environment, nothing from the command line (which `ps` shows):

    MLFLOW_TRACKING_URI                              the server, e.g. http://mlflow:5000
    MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD   an admin (the one MLflow bootstraps)
    MLFLOW_SERVICE_USERNAME, MLFLOW_SERVICE_PASSWORD     the account that trains (scheduler, train)
    MLFLOW_VIEWER_USERNAME, MLFLOW_VIEWER_PASSWORD       the read-only account for people

Each account gets one role in the server's `default` workspace (compose runs the server with
`--enable-workspaces`), holding exactly the grants below. Creating anything (an experiment, a
registered model) needs USE on the workspace: only `trainers` has it. So the viewer, with READ
on every experiment and registered model and no workspace grant, reads everything and writes
nothing, not even a registered model of its own (docs/deployment.md). Neither is an admin.
"""

from __future__ import annotations

import os
import re
import sys
from typing import NamedTuple

from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client
from mlflow.server.auth.client import AuthServiceClient
from mlflow.utils.workspace_utils import DEFAULT_WORKSPACE_NAME

Grants = tuple[tuple[str, str, str], ...]


class Account(NamedTuple):
    """An account's role in the default workspace, its (resource type, resource pattern,
    permission) grants ("*": every resource of the type), and whether it keeps the grants
    MLflow gave it directly (MANAGE on what it created)."""

    role: str
    grants: Grants
    keeps_direct_grants: bool


# MANAGE on registered models because moving `champion` and deleting `challenger` need it (an
# alias delete checks can_delete, which only MANAGE has). The viewer holds its role and nothing
# else: a model it made before workspaces were on (its MANAGE on it) is taken back.
ACCOUNTS = {
    "service": Account(
        "trainers",
        (
            ("workspace", "*", "USE"),
            ("experiment", "*", "EDIT"),
            ("registered_model", "*", "MANAGE"),
        ),
        keeps_direct_grants=True,
    ),
    "viewer": Account(
        "viewers",
        (("experiment", "*", "READ"), ("registered_model", "*", "READ")),
        keeps_direct_grants=False,
    ),
}


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        sys.exit(f"bootstrap_accounts: {name} is not set (see .env.example)")
    return value


def _exists(exc: MlflowException) -> bool:
    return exc.error_code == "RESOURCE_ALREADY_EXISTS"


def ensure_user(client: AuthServiceClient, username: str, password: str) -> str:
    """Create `username`, or reset its password if it exists; never an admin. Returns what it
    did, for the log."""
    try:
        client.create_user(username, password)
        action = "created"
    except MlflowException as exc:
        if not _exists(exc):
            raise
        client.update_user_password(username, password)
        action = "password reset"
    client.update_user_admin(username, False)
    return action


def ensure_role(client: AuthServiceClient, name: str, grants: Grants) -> int:
    """The role `name` in the default workspace, holding exactly `grants`; its id."""
    roles = {r.name: r for r in client.list_roles(DEFAULT_WORKSPACE_NAME)}
    role = roles.get(name) or client.create_role(DEFAULT_WORKSPACE_NAME, name)
    wanted = {(t, p): permission for t, p, permission in grants}
    for held in client.list_role_permissions(role.id):
        permission = wanted.pop((held.resource_type, held.resource_pattern), None)
        if permission is None:
            client.remove_role_permission(held.id)
        elif held.permission != permission:
            client.update_role_permission(held.id, permission)
    for (resource_type, pattern), permission in wanted.items():
        client.add_role_permission(role.id, resource_type, pattern, permission)
    return int(role.id)


def ensure_member(client: AuthServiceClient, username: str, role_id: int) -> None:
    try:
        client.assign_role(username, role_id)
    except MlflowException as exc:
        if not _exists(exc):
            raise


def revoke_direct_grants(client: AuthServiceClient, username: str) -> int:
    """Remove the grants `username` holds outside named roles (MLflow keeps them on a
    per-user role, `__user_<id>__`); how many there were."""
    direct = [
        held
        for role in client.list_user_roles(username)
        if re.fullmatch(r"__user_\d+__", role.name)
        for held in role.permissions
    ]
    for held in direct:
        client.remove_role_permission(held.id)
    return len(direct)


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
    for kind, (username, password) in accounts.items():
        account = ACCOUNTS[kind]
        action = ensure_user(client, username, password)
        ensure_member(client, username, ensure_role(client, account.role, account.grants))
        given = ", ".join(f"{p} on {t} {r}" for t, r, p in account.grants)
        line = f"{kind} account {username!r}: {action}; role {account.role!r}: {given}"
        if not account.keeps_direct_grants and (revoked := revoke_direct_grants(client, username)):
            line += f"; {revoked} direct grant(s) revoked"
        print(line)


if __name__ == "__main__":
    main()
