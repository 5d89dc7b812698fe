"""The model registry as retraining uses it: versions, aliases, tags, descriptions, history.

MLflow 3's registry: aliases (`champion`, `challenger`), never the deprecated stages. Aliases
are read from the registered model (`get_registered_model(name).aliases`), since
`search_model_versions` returns versions without theirs. Which versions held `champion`,
in order, is a registered-model tag (`champion.history`), so that `rollback` knows the
previous one.

On a team server (MLflow's basic-auth app) a request the server refuses or fails becomes a
`RegistryError` naming the request and the account (`server_errors`), and retraining makes
the registered model before it reads any alias of it (`ensure_model`).
"""

from __future__ import annotations

import contextlib
import re
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.client import responses
from urllib.parse import urlsplit

import mlflow
import requests
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import read_mlflow_creds
from mlflow.utils.rest_utils import http_request, verify_rest_response

from pipeline import errors
from pipeline.names import Metric, Tag

CHAMPION = "champion"
CHALLENGER = "challenger"
_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")
_RUN_ID = re.compile(r"[0-9a-f]{32}")
# MLflow's SQL stores keep at most this many characters of a version's description
DESCRIPTION_LIMIT = 5000
HISTORY = "**History**"


class RegistryError(errors.RegistryError):
    """The tracking server refused or failed a request (a 403, a 500, ...) of the registry or
    of tracking: `request` (e.g. `POST registered-models/alias`), the `account` it was sent
    as, the answer's `status` and MLflow's message, in one line."""

    def __init__(self, request: str, account: str, status: int, message: str) -> None:
        super().__init__(f"{request} as {account}: {status} {message}")
        self.request, self.account, self.status = request, account, status


@contextlib.contextmanager
def server_errors() -> Iterator[None]:
    """Raise a server's refusal or failure inside the block as a RegistryError; any other
    error (a local store's, no answer at all, a bug) goes on as it is."""
    try:
        yield
    except (MlflowException, requests.HTTPError) as exc:
        refused = _refusal(exc)
        if refused is None:
            raise
        raise refused from exc


# urllib3's words once MLflow has spent its retries on a 429 or a 5xx (`http_request`)
_RETRIED = re.compile(r"too many (\d{3}) error responses")


def _refusal(exc: BaseException) -> RegistryError | None:
    """What `exc` (or what it was raised from) says the server answered, as a RegistryError;
    None when it was not a server's answer. MLflow's REST client raises an MlflowException
    whose text names the endpoint but neither the method nor the account: they are in the
    frames the traceback keeps, those of `verify_rest_response` (the answer it checked) or,
    after retries, of `http_request`. Its artifact client raises requests' HTTPError, which
    holds the answer."""
    error: BaseException | None = exc
    while error is not None:
        if isinstance(error, requests.HTTPError) and error.response is not None:
            return _answered(error.response)
        for frame, _ in traceback.walk_tb(error.__traceback__):
            if frame.f_code is verify_rest_response.__code__:
                return _answered(frame.f_locals["response"])
            if frame.f_code is http_request.__code__ and (retried := _RETRIED.search(str(error))):
                status = int(retried[1])
                reason = (
                    f"{responses.get(status, '')}, also when retried (the server's log says why)"
                )
                return _error(frame.f_locals["method"], frame.f_locals["endpoint"], status, reason)
        error = error.__cause__
    return None


def _answered(response: requests.Response) -> RegistryError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "message" in body:
        text = f"{body.get('error_code', 'ERROR')}: {body['message']}"
    else:
        text = response.text or response.reason
    path = urlsplit(response.request.url or "").path
    return _error(str(response.request.method), path, response.status_code, text)


def _error(method: str, path: str, status: int, message: str) -> RegistryError:
    request = f"{method} {re.sub(r'^.*?/api/[0-9.]+/(mlflow/)?', '', path)}"
    account = read_mlflow_creds().username or "anonymous"
    return RegistryError(request, account, status, " ".join(message.split())[:300])


def ensure_model(client: MlflowClient, name: str) -> None:
    """Register the model `name` unless this account sees it already. The basic-auth app
    answers a request about a model that does not exist (its alias, its versions, the model
    itself on a server with workspaces) with 403, not 404, so that no one learns which names
    exist: retraining makes the model, as the account that adds its versions, before it reads
    an alias. A search shows only what the account may read, so an account that may not
    make the model gets the 403 of this create (a RegistryError), never a guess."""
    if client.search_registered_models(filter_string=f"name = '{name}'"):
        return
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # made meanwhile, by another attempt
            raise


def logged_model_id(client: MlflowClient, run_id: str) -> str:
    """The id of the model a training run logged (`Artifact.MODEL_NAME`)."""
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    if outputs:
        return _model_id(str(max(outputs, key=lambda o: o.step).model_id))
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    if not found:
        raise LookupError(f"run {run_id} logged no model (tracking.log_model=false?)")
    return _model_id(str(found[0].model_id))


def _model_id(model_id: str) -> str:
    """A logged model's id as the store gives it, checked before it goes into a URI."""
    if not _MODEL_ID.fullmatch(model_id):
        raise LookupError(f"logged model id {model_id[:100]!r} is not one MLflow makes")
    return model_id


def register(name: str, model_id: str, tags: Mapping[str, str], description: str) -> ModelVersion:
    """A new version of `name` (created if need be) from a logged model, with its tags and
    description in place before any alias can point at it."""
    version = mlflow.register_model(f"models:/{model_id}", name, tags=dict(tags))
    client = MlflowClient()
    client.update_model_version(name, str(version.version), description=description)
    return client.get_model_version(name, str(version.version))


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version `name@alias` points at; None when the model or the alias does not exist
    (or the alias dangles: its version was deleted)."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """version -> its aliases, comma-separated ({} when the model is not registered)."""
    shown: dict[str, list[str]] = {}
    for alias, version in sorted(_model_aliases(client, name).items()):
        shown.setdefault(str(version), []).append(alias)
    return {version: ", ".join(names) for version, names in shown.items()}


def versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of `name`, newest first."""
    found = client.search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(str(v.version)), reverse=True)


def champion_history(client: MlflowClient, name: str) -> list[str]:
    """The versions that held `champion`, oldest first (the current one last)."""
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    # a tag anyone with EDIT on the model may rewrite: only version numbers count
    return [v for v in tags.get(Tag.CHAMPION_HISTORY, "").split(",") if v.isdecimal()]


def set_champion(client: MlflowClient, name: str, version: str) -> None:
    """Move `champion` to `version` and append it to the history."""
    client.set_registered_model_alias(name, CHAMPION, version)
    history = [*champion_history(client, name), version]
    client.set_registered_model_tag(name, Tag.CHAMPION_HISTORY, ",".join(history[-100:]))


def rollback_target(client: MlflowClient, name: str) -> tuple[str, str] | None:
    """(current champion, the version to restore): the last champion before the current one
    that still exists; None when there is none."""
    current = alias_version(client, name, CHAMPION)
    if current is None:
        return None
    history = champion_history(client, name)
    while history and history[-1] == str(current.version):
        history.pop()
    existing = {str(v.version) for v in versions(client, name)}
    for version in reversed(history):
        if version in existing and version != str(current.version):
            return str(current.version), version
    return None


def restore_champion(client: MlflowClient, name: str, version: str) -> None:
    """Rollback: `champion` back to `version`, dropping the newer entries from the history so
    that a second rollback goes one step further back."""
    history = champion_history(client, name)
    while history and history[-1] != version:
        history.pop()
    client.set_registered_model_alias(name, CHAMPION, version)
    client.set_registered_model_tag(name, Tag.CHAMPION_HISTORY, ",".join(history or [version]))


def training_run_tags(client: MlflowClient, version: ModelVersion) -> dict[str, str]:
    """The tags of the run that trained `version` (its `retrain.training_run_id` tag, else
    MLflow's own `run_id`); {} when that names no run this account can read. The tag is
    data anyone with EDIT on the model may rewrite: only a run id is looked up."""
    tags = version.tags or {}
    run_id = str(tags.get(Tag.TRAINING_RUN_ID) or version.run_id or "")
    if not _RUN_ID.fullmatch(run_id):
        return {}
    try:
        return dict(client.get_run(run_id).data.tags)
    except MlflowException:
        return {}


def trained_on(client: MlflowClient, name: str, fingerprint: str) -> ModelVersion | None:
    """A version of `name` already trained on the set-up `fingerprint` (data, config and
    holdout digests) and decided by the gate, whatever its aliases now: the champion first,
    then the challenger, then the newest. A version without a decision (its attempt died
    before the gate) does not count. The fingerprint is the training run's tag (older
    versions carry it themselves)."""
    held = {alias: str(v) for alias, v in _model_aliases(client, name).items()}
    order = {held.get(CHAMPION): 0, held.get(CHALLENGER): 1}
    candidates = [v for v in versions(client, name) if (v.tags or {}).get(Tag.DECISION)]
    candidates.sort(key=lambda v: order.get(str(v.version), 2))  # stable: newest first
    for version in candidates:
        own = (version.tags or {}).get(Tag.FINGERPRINT)
        found = own if own is not None else training_run_tags(client, version).get(Tag.FINGERPRINT)
        if found == fingerprint:
            return version
    return None


def note(client: MlflowClient, name: str, version: str, event: str, detail: str) -> None:
    """Append `- <event> on <date>: <detail>` to the version's description, under its
    history, so that the Models page says what happened to it after its decision
    ("rolled back on 2026-12-06 21:14 UTC: champion returned to v1"). The oldest entries
    give way when the description would pass `DESCRIPTION_LIMIT`."""
    import datetime

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = client.get_model_version(name, version).description or ""
    head, _, history = text.partition(f"\n\n{HISTORY}\n")
    entries = [line for line in history.splitlines() if line.startswith("- ")]
    entries.append(f"- {event} on {now}: {detail}")
    while True:
        described = f"{head}\n\n{HISTORY}\n" + "\n".join(entries)
        if len(described) <= DESCRIPTION_LIMIT or len(entries) == 1:
            break
        entries.pop(0)
    client.update_model_version(name, version, description=described[:DESCRIPTION_LIMIT])


def _model_aliases(client: MlflowClient, name: str) -> dict[str, str]:
    try:
        return dict(client.get_registered_model(name).aliases)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise


@dataclass(frozen=True)
class Row:
    """One line of `python -m pipeline.registry list`."""

    version: str
    aliases: str
    accuracy: str
    macro_f1: str
    data_digest: str
    decision: str
    created: str


def table(client: MlflowClient, name: str) -> list[Row]:
    """Every version with its aliases, holdout scores, data digest (its training run's, or
    its own tag on older versions), decision and date."""
    import datetime

    held = aliases(client, name)
    rows = []
    for v in versions(client, name):
        tags = v.tags or {}
        digest = tags.get(Tag.DATA_SOURCE_DIGEST) or training_run_tags(client, v).get(
            Tag.DATA_SOURCE_DIGEST, ""
        )
        created = datetime.datetime.fromtimestamp(v.creation_timestamp / 1000, datetime.UTC)
        rows.append(
            Row(
                version=str(v.version),
                aliases=held.get(str(v.version), ""),
                accuracy=tags.get(Metric.HOLDOUT_ACCURACY, ""),
                macro_f1=tags.get(Metric.HOLDOUT_MACRO_F1, ""),
                data_digest=digest[:12],
                decision="; ".join(
                    filter(None, [tags.get(Tag.DECISION, "(undecided)"), tags.get(Tag.MANUAL)])
                ),
                created=created.strftime("%Y-%m-%d %H:%M"),
            )
        )
    return rows
