"""The Azure ML client: how it is built, how it is called, and the checks before a run.

- `make_ml_client()` builds the workspace's `MLClient` with the identity that
  the blob datastore uses too (flows/azure_auth.py);
- `call_with_retry()` retries one service call with back-off while the
  service answers 408/429/5xx or the connection drops; user errors (400, 403,
  404) are not retried at all;
- `check_workspace()` reads the workspace, the compute target and the
  datastore before anything is uploaded, and checks that the datastore is the
  blob container of the settings (`BlobLocation`), so a wrong credential,
  name, role or container fails the flow at once with what to fix.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from azure.ai.ml import MLClient
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from flows.azure_auth import azure_credential
from flows.compute.aml_specs import AmlTarget
from flows.settings import Settings

T = TypeVar("T")

TRANSIENT_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})


class AmlPreflightError(RuntimeError):
    """The workspace cannot be used as configured; the message says which setting or role."""


@dataclass(frozen=True)
class BlobLocation:
    """The storage account and container the flow reads and writes (the blob settings)."""

    account: str
    container: str

    @classmethod
    def from_settings(cls, settings: Settings) -> BlobLocation:
        # The blob datastore knows the account however it is given (connection
        # string, account URL or credentials block); building it sends nothing.
        from flows.datastore.blob import BlobDatastore

        store = BlobDatastore.from_settings(settings)
        return cls(store.account_name, store.container)


class Clock:
    """Time, injectable: the tests run an hour-long job in no time."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        if wake is None:
            time.sleep(seconds)
        else:
            wake.wait(seconds)


def is_transient(exc: BaseException) -> bool:
    """Whether a retry may help: a dropped connection, or 408/429/5xx. Auth failures and other
    user errors (400, 403, 404) are final.
    """
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return True
    return (
        isinstance(exc, HttpResponseError)
        and not isinstance(exc, ClientAuthenticationError)
        and exc.status_code in TRANSIENT_STATUS_CODES
    )


def make_credential(settings: Settings) -> TokenCredential:
    """The identity the settings name (a service principal, or DefaultAzureCredential)."""
    secret = settings.aml_client_secret
    return azure_credential(
        settings.aml_tenant_id,
        settings.aml_client_id,
        secret.get_secret_value() if secret is not None else None,
    )


def make_ml_client(
    settings: Settings,
    credential: TokenCredential | None = None,
    **client_options: Any,
) -> MLClient:
    """The workspace client. The behaviour tests replace this function, and only this one.

    The flows pass `settings` alone. `credential` replaces the one from
    settings, and `client_options` go to `MLClient` as they are (`cloud` and
    `cloud_metadata` for a cloud the SDK does not know, `connection_verify`
    for a CA bundle): the HTTP tests (tests/integration/test_aml_http.py)
    point the real client at a fake workspace with them.
    """
    return MLClient(
        credential=credential or make_credential(settings),
        subscription_id=settings.aml_subscription_id,
        resource_group_name=settings.aml_resource_group,
        workspace_name=settings.aml_workspace,
        user_agent="somemodel-pipelines",
        **client_options,
    )


def prefect_tags() -> dict[str, str]:
    """The submitting Prefect flow run, as job tags (empty outside a flow run)."""
    from prefect.runtime import flow_run

    tags = {"prefect_flow_run_id": flow_run.id or ""}
    # Without PREFECT_UI_URL the runtime still builds a URL, starting with "None/".
    if (flow_run.ui_url or "").startswith(("http://", "https://")):
        tags["prefect_flow_run_url"] = flow_run.ui_url
    return {k: v for k, v in tags.items() if v}


class Caller(Protocol):
    """`call(what, fn)`: run one service call the way `call_with_retry` does."""

    def __call__(self, what: str, fn: Callable[[], T]) -> T: ...


def call_with_retry(
    what: str,
    fn: Callable[[], T],
    *,
    attempts: int,
    sleep: Callable[[float], None],
    log: logging.Logger | logging.LoggerAdapter,
) -> T:
    """`fn()`, retried with back-off while the service answers 429/5xx."""

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "Azure ML %s failed transiently (attempt %d): %s; retrying",
            what,
            state.attempt_number,
            first_line(exc),
        )

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=2, max=60),
        sleep=sleep,
        before_sleep=log_retry,
        reraise=True,
    )
    return retrying(fn)


def check_workspace(
    call: Caller,
    client: MLClient,
    target: AmlTarget,
    workspace: str,
    log: logging.Logger | logging.LoggerAdapter,
    storage: BlobLocation | None = None,
) -> None:
    """Fail fast, before any upload, when the identity or the workspace is wrong.

    With `storage` (the blob settings), the datastore must point at that
    account and container: the flow uploads the inputs and the wheel there,
    and the jobs read through the datastore.
    """
    where = f"workspace {workspace!r}"
    try:
        call("get workspace", lambda: client.workspaces.get(workspace))
    except ClientAuthenticationError as exc:
        raise AmlPreflightError(
            f"cannot authenticate to Azure for {where}: {first_line(exc)}. Give a "
            "managed identity, workload identity or `az login` to DefaultAzureCredential, "
            "or set SOMEMODEL_AML_TENANT_ID, SOMEMODEL_AML_CLIENT_ID and "
            "SOMEMODEL_AML_CLIENT_SECRET for a service principal"
        ) from exc
    except ResourceNotFoundError as exc:
        raise AmlPreflightError(
            f"{where} not found: check SOMEMODEL_AML_SUBSCRIPTION_ID, "
            "SOMEMODEL_AML_RESOURCE_GROUP and SOMEMODEL_AML_WORKSPACE"
        ) from exc
    except HttpResponseError as exc:
        raise AmlPreflightError(access_message(exc, where)) from exc
    checks: list[tuple[str, Callable[[], object]]] = [
        (
            f"compute target {target.compute!r} (SOMEMODEL_AML_COMPUTE_TARGET)",
            lambda: client.compute.get(target.compute),
        ),
        (
            f"datastore {target.datastore!r} (SOMEMODEL_AML_DATASTORE)",
            lambda: client.datastores.get(target.datastore),
        ),
    ]
    found: list[object] = []
    for what, get in checks:
        try:
            found.append(call(f"get {what}", get))
        except ResourceNotFoundError as exc:
            raise AmlPreflightError(f"{where} has no {what}") from exc
        except HttpResponseError as exc:
            raise AmlPreflightError(access_message(exc, f"{what} in {where}")) from exc
    if storage is not None:
        check_datastore_location(found[-1], target.datastore, storage)
    log.info(
        "Azure ML %s reachable; compute %s, datastore %s",
        where,
        target.compute,
        target.datastore,
    )


def check_datastore_location(datastore: object, name: str, storage: BlobLocation) -> None:
    """The datastore must be the blob container of the settings, or jobs read another one.

    A mismatch would show only after the image build and the queue, as a job
    that cannot find its input; here it stops the flow before any upload.
    """
    account = getattr(datastore, "account_name", None)
    container = getattr(datastore, "container_name", None)
    if container is None:
        kind = getattr(datastore, "type", None) or type(datastore).__name__
        raise AmlPreflightError(
            f"datastore {name!r} (SOMEMODEL_AML_DATASTORE) is a {kind} datastore, not an "
            f"Azure Blob container: register one for container {storage.container!r} "
            f"in account {storage.account!r} (az ml datastore create --type azure_blob ...)"
        )
    if (account or "").lower() == storage.account.lower() and container == storage.container:
        return
    raise AmlPreflightError(
        f"datastore {name!r} (SOMEMODEL_AML_DATASTORE) points at container {container!r} in "
        f"storage account {account!r}, but the flow reads and writes container "
        f"{storage.container!r} in account {storage.account!r} (SOMEMODEL_BLOB_CONTAINER and "
        "the blob credential): the jobs would not see the inputs and the wheel. Set "
        "SOMEMODEL_BLOB_CONTAINER and the blob credential to the datastore's container, or "
        "register a datastore for yours (az ml datastore create --type azure_blob ...) and "
        "set SOMEMODEL_AML_DATASTORE to it"
    )


def first_line(exc: BaseException | None) -> str:
    """The first line of the error's message (Azure SDK messages run to many lines), or ""."""
    text = str(exc or "").strip()
    return text.splitlines()[0] if text else ""


def access_message(exc: HttpResponseError, what: str) -> str:
    """A preflight message for a refused read of `what`: for 403, which role the identity lacks."""
    if exc.status_code == 403:
        return (
            f"the identity may not read {what} (403): give it the 'AzureML Data Scientist' "
            f"role on the workspace. Service said: {first_line(exc)}"
        )
    return f"cannot read {what} (HTTP {exc.status_code}): {first_line(exc)}"
