"""The blob datastore: an Azure Blob container with the local folder's layout.

Credentials are prefect-azure's `AzureBlobStorageCredentials` block (a
connection string as a `SecretStr`, or an account URL for
`DefaultAzureCredential` / a service principal), built from settings or loaded
by name. The block's own `get_*_client` methods return asyncio clients; the
datastore seam is synchronous and called from worker threads, so the same
fields build the synchronous `ContainerClient` here.

Transient faults (connection errors, timeouts, 408, 5xx: Blob Storage throttles
with 503 ServerBusy) are retried with exponential back-off by the storage SDK's
retry policy (configured in `__init__`: about 4, 6, 10, 18, 34 s). That policy
does not retry 429, which a proxy or gateway in front of the account may send,
so each operation retries it here too, with the same count and back-off;
other 4xx answers are permanent and are translated at once into
`DatastoreError`s whose messages name the container, the account and the
setting to check, and never carry a key, a SAS token or a connection string.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Concatenate, NoReturn, ParamSpec, TypeVar
from urllib.parse import quote, urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import ContainerClient, ContentSettings, ExponentialRetry
from prefect_azure import AzureBlobStorageCredentials
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from flows.azure_auth import azure_credential
from flows.datastore.base import (
    CHUNK_SIZE,
    DatastoreError,
    DatastoreNotFoundError,
    PreconditionFailedError,
    Versioned,
)
from flows.settings import Settings
from somemodel.artifacts import atomic_output

# Bounded requests keep memory flat for big files: the SDK's defaults (64 MiB
# single put, 32 MiB first get) would read a 50 MB CSV whole into memory. Gets
# are smaller still because the SDK assembles each one with
# `b"".join(list(response))`, and `list()` preallocates one 8-byte slot per byte
# of the response: a 4 MiB get briefly costs ~40 MiB, a 512 KiB one ~5 MiB.
_DOWNLOAD_CHUNK = 512 * 1024
_CLIENT_TUNING: dict[str, Any] = {
    "max_single_put_size": CHUNK_SIZE,
    "max_block_size": CHUNK_SIZE,
    "max_single_get_size": _DOWNLOAD_CHUNK,
    "max_chunk_get_size": _DOWNLOAD_CHUNK,
    "connection_timeout": 20,
    "read_timeout": 120,
}
_SHA256_METADATA = "sha256"

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _ThrottledError(DatastoreError):
    """429 Too Many Requests, after every retry."""


def _retry_throttled(
    method: Callable[Concatenate[BlobDatastore, _P], _R],
) -> Callable[Concatenate[BlobDatastore, _P], _R]:
    @functools.wraps(method)
    def wrapper(self: BlobDatastore, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        for attempt in Retrying(
            retry=retry_if_exception_type(_ThrottledError),
            stop=stop_after_attempt(self.retry_total + 1),
            wait=wait_exponential(multiplier=self.initial_backoff, max=60),
            reraise=True,
        ):
            with attempt:
                return method(self, *args, **kwargs)
        raise AssertionError("unreachable: Retrying re-raises")  # pragma: no cover

    return wrapper


class BlobDatastore:
    kind = "blob"

    def __init__(
        self,
        credentials: AzureBlobStorageCredentials,
        container: str,
        *,
        credential_hint: str = "the blob credentials",
        max_concurrency: int = 4,
        retry_total: int = 5,
        initial_backoff: int = 2,
    ) -> None:
        """`credential_hint` says which setting holds the credentials, for error messages."""
        self.container = container
        self.credential_hint = credential_hint
        self.retry_total = retry_total
        self.initial_backoff = initial_backoff
        self.max_concurrency = max_concurrency
        self._secrets = _secrets_of(credentials)
        retry = ExponentialRetry(
            initial_backoff=initial_backoff,
            increment_base=2,
            retry_total=retry_total,
            random_jitter_range=1,
        )
        self._client = _container_client(credentials, container, retry)
        self.account_name = self._client.account_name or "?"
        parts = urlsplit(self._client.url)
        # Rebuilt from its parts: a SAS connection string puts the token in the query.
        self._base_url = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> BlobDatastore:
        credentials, hint = credentials_from_settings(settings)
        return cls(credentials, settings.blob_container, credential_hint=hint, **kwargs)

    # --- the Datastore protocol ---------------------------------------------------

    def describe(self) -> str:
        return f"blob container {self.container!r} in storage account {self.account_name!r}"

    def uri(self, path: str) -> str:
        return f"{self._base_url}/{quote(_blob_name(path, self))}"

    @_retry_throttled
    def exists(self, path: str) -> bool:
        name = _blob_name(path, self)
        with self._translate(path):
            try:
                self._client.get_blob_client(name).get_blob_properties()
            except ResourceNotFoundError as exc:
                if _code(exc) == "ContainerNotFound":
                    raise
                return False
        return True

    @_retry_throttled
    def list_files(self, prefix: str) -> list[str]:
        folder = prefix.strip("/")
        if folder:
            _blob_name(folder, self)
        start = f"{folder}/" if folder else ""
        with self._translate(prefix):
            names = [blob.name for blob in self._client.list_blobs(name_starts_with=start)]
        return sorted(n for n in names if not PurePosixPath(n).name.startswith("."))

    @_retry_throttled
    def fingerprint(self, path: str) -> str:
        """`sha256:` as on the local datastore when this datastore uploaded the blob.

        Blobs written by other tools have no sha256 metadata: then the MD5 the
        service stores, and the ETag as a last resort (a version, not a content hash).
        """
        name = _blob_name(path, self)
        with self._translate(path):
            properties = self._client.get_blob_client(name).get_blob_properties()
        sha256 = (properties.metadata or {}).get(_SHA256_METADATA)
        if sha256:
            return f"sha256:{sha256}"
        md5 = properties.content_settings.content_md5
        if md5 is not None:
            return f"md5:{bytes(md5).hex()}"
        return f"etag:{properties.etag.strip(chr(34))}"

    @_retry_throttled
    def delete_file(self, path: str) -> bool:
        name = _blob_name(path, self)
        with self._translate(path):
            try:
                self._client.get_blob_client(name).delete_blob()
            except ResourceNotFoundError as exc:
                if _code(exc) == "ContainerNotFound":
                    raise
                return False
        return True

    @_retry_throttled
    def download_file(self, path: str, dest: Path) -> None:
        name = _blob_name(path, self)
        with atomic_output(dest) as tmp:
            with self._translate(path), tmp.open("wb") as stream:
                downloader = self._client.get_blob_client(name).download_blob(
                    max_concurrency=self.max_concurrency
                )
                downloader.readinto(stream)
            self._check_download(path, tmp, downloader.properties)

    @_retry_throttled
    def upload_file(self, src: Path, path: str, *, overwrite: bool = False) -> None:
        name = _blob_name(path, self)
        if not overwrite and self.exists(path):
            raise DatastoreError(
                f"{path!r} already exists in the {self.describe()} (not overwriting it)"
            )
        sha256, md5, size = _digests(src)
        blob = self._client.get_blob_client(name)
        with self._translate(path), src.open("rb") as stream:
            try:
                blob.upload_blob(
                    stream,
                    length=size,
                    overwrite=overwrite,
                    max_concurrency=self.max_concurrency,
                    # The service checks each block's MD5 as it arrives.
                    validate_content=True,
                    content_settings=ContentSettings(content_md5=bytearray(md5)),
                    metadata={_SHA256_METADATA: sha256},
                )
            except ResourceExistsError as exc:
                raise DatastoreError(
                    f"{path!r} already exists in the {self.describe()} (not overwriting it)"
                ) from exc
            properties = blob.get_blob_properties()
        stored_md5 = properties.content_settings.content_md5
        if (
            properties.size != size
            or properties.metadata.get(_SHA256_METADATA) != sha256
            or (stored_md5 is not None and bytes(stored_md5) != md5)
        ):
            raise DatastoreError(
                f"upload of {path!r} to the {self.describe()} was corrupted: the stored blob "
                "does not match the local file's size and hashes"
            )

    @_retry_throttled
    def read_versioned(self, path: str) -> Versioned | None:
        name = _blob_name(path, self)
        with self._translate(path):
            try:
                downloader = self._client.get_blob_client(name).download_blob()
                data = downloader.readall()
            except ResourceNotFoundError as exc:
                if _code(exc) == "ContainerNotFound":
                    raise
                return None
        etag = downloader.properties.etag
        # surrogateescape: a file that is not UTF-8 still comes with its version tag, so the
        # caller can refuse it by name and replace it conditionally.
        return Versioned(text=data.decode("utf-8", "surrogateescape"), etag=etag)

    @_retry_throttled
    def write_conditional(self, path: str, text: str, *, etag: str | None) -> None:
        name = _blob_name(path, self)
        condition: dict[str, Any] = (
            {"overwrite": False}  # If-None-Match: *
            if etag is None
            else {"overwrite": True, "etag": etag, "match_condition": MatchConditions.IfNotModified}
        )
        with self._translate(path):
            try:
                self._client.get_blob_client(name).upload_blob(
                    text.encode("utf-8"),
                    content_settings=ContentSettings(content_type="application/json"),
                    **condition,
                )
            except (ResourceModifiedError, ResourceExistsError) as exc:
                raise PreconditionFailedError(
                    f"{path!r} changed since it was read in the {self.describe()}"
                ) from exc

    # --- set-up ----------------------------------------------------------------------

    @_retry_throttled
    def create_container(self) -> bool:
        """Create the container; False when it already existed (idempotent)."""
        with self._translate(""):
            try:
                self._client.create_container()
            except ResourceExistsError:
                return False
        return True

    # --- errors ----------------------------------------------------------------------

    def _check_download(self, path: str, local: Path, properties: Any) -> None:
        expected_sha = (properties.metadata or {}).get(_SHA256_METADATA)
        expected_md5 = properties.content_settings.content_md5
        if not expected_sha and expected_md5 is None:
            return
        sha256, md5, _ = _digests(local)
        if (expected_sha and expected_sha != sha256) or (
            expected_md5 is not None and bytes(expected_md5) != md5
        ):
            raise DatastoreError(
                f"download of {path!r} from the {self.describe()} does not match the hash "
                "stored with the blob: the blob or the transfer is corrupted"
            )

    @contextmanager
    def _translate(self, path: str) -> Iterator[None]:
        """Turn the SDK's exceptions into DatastoreErrors built only from safe parts.

        `from None` on purpose: the SDK's own messages echo request URLs (a SAS
        token's signature among them), and Prefect logs the whole chain.
        """
        on = f" on {path!r}" if path else ""
        try:
            yield
        except DatastoreError:
            raise
        except ResourceNotFoundError as exc:
            if _code(exc) == "ContainerNotFound":
                raise DatastoreNotFoundError(
                    f"the {self.describe()} does not exist: create it with "
                    "`python -m deployments.blob --create-container`, or set "
                    "SOMEMODEL_BLOB_CONTAINER to an existing container"
                ) from None
            raise DatastoreNotFoundError(
                f"{path!r} does not exist in the {self.describe()}"
            ) from None
        except ClientAuthenticationError as exc:
            self._raise_auth_error(on, exc)
        except HttpResponseError as exc:
            if exc.status_code in (401, 403):
                self._raise_auth_error(on, exc)
            if exc.status_code == 429:
                raise _ThrottledError(
                    f"the {self.describe()} is throttling requests{on} (429), even after "
                    f"{self.retry_total} retries with back-off; try again later"
                ) from None
            raise DatastoreError(
                f"the {self.describe()} answered {exc.status_code} ({_code(exc) or 'no code'})"
                f"{on}: {self._redact(exc.reason or '')}"
            ) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            raise DatastoreError(
                f"could not reach the {self.describe()} at {self._base_url}{on}, even after "
                "retries with back-off; check that the storage endpoint is up and reachable "
                f"from this machine ({type(exc).__name__}: {self._redact(str(exc))[:300]})"
            ) from None
        except AzureError as exc:
            raise DatastoreError(
                f"{type(exc).__name__}{on} in the {self.describe()}: {self._redact(str(exc))[:500]}"
            ) from None

    def _raise_auth_error(self, on: str, exc: AzureError) -> NoReturn:
        code = _code(exc) if isinstance(exc, HttpResponseError) else type(exc).__name__
        raise DatastoreError(
            f"not authorised to use the {self.describe()}{on} "
            f"({code or 'authentication failed'}): check {self.credential_hint}"
        ) from None

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return re.sub(r"(?i)(sig|accountkey)=[^&;\s]+", r"\1=***", text)


def credentials_from_settings(settings: Settings) -> tuple[AzureBlobStorageCredentials, str]:
    """The credentials block for the settings, and which setting to check when they fail."""
    if settings.blob_credentials_block:
        name = settings.blob_credentials_block
        hint = (
            f"the Prefect block {name!r} (SOMEMODEL_BLOB_CREDENTIALS_BLOCK): its connection "
            "string, or its account URL and the identity's 'Storage Blob Data Contributor' role"
        )
        try:
            loaded = AzureBlobStorageCredentials.load(name, _sync=True)  # type: ignore[call-arg]
        except ValueError as exc:
            raise DatastoreError(
                f"no AzureBlobStorageCredentials block named {name!r} "
                "(SOMEMODEL_BLOB_CREDENTIALS_BLOCK): save one with "
                f"`python -m deployments.blob --save-block {name}`"
            ) from exc
        if not isinstance(
            loaded, AzureBlobStorageCredentials
        ):  # only async callers get a coroutine
            raise DatastoreError(f"loading the Prefect block {name!r} did not return credentials")
        return loaded, hint
    if settings.blob_connection_string is not None:
        return (
            AzureBlobStorageCredentials(connection_string=settings.blob_connection_string),
            "SOMEMODEL_BLOB_CONNECTION_STRING (the account name and key)",
        )
    if settings.blob_account_url:
        return (
            AzureBlobStorageCredentials(account_url=settings.blob_account_url),
            "SOMEMODEL_BLOB_ACCOUNT_URL and the identity DefaultAzureCredential finds "
            "(az login, managed identity or AZURE_CLIENT_ID/AZURE_TENANT_ID/"
            "AZURE_CLIENT_SECRET): it needs the 'Storage Blob Data Contributor' role",
        )
    raise DatastoreError(
        "the blob datastore needs SOMEMODEL_BLOB_CONNECTION_STRING, SOMEMODEL_BLOB_ACCOUNT_URL "
        "or SOMEMODEL_BLOB_CREDENTIALS_BLOCK"
    )


def _container_client(
    credentials: AzureBlobStorageCredentials, container: str, retry: ExponentialRetry
) -> ContainerClient:
    options = {**_CLIENT_TUNING, "retry_policy": retry}
    try:
        if credentials.connection_string is not None:
            return ContainerClient.from_connection_string(
                credentials.connection_string.get_secret_value(), container, **options
            )
    except ValueError:
        # The SDK's message is generic; ours names the setting and shows nothing of it.
        raise DatastoreError(
            "the blob connection string is malformed: it needs AccountName, AccountKey (or "
            "SharedAccessSignature) and BlobEndpoint or EndpointSuffix"
        ) from None
    secret = credentials.client_secret
    credential = azure_credential(
        credentials.tenant_id,
        credentials.client_id,
        secret.get_secret_value() if secret is not None else None,
    )
    return ContainerClient(
        credentials.account_url or "", container, credential=credential, **options
    )


def _secrets_of(credentials: AzureBlobStorageCredentials) -> tuple[str, ...]:
    secrets: list[str] = []
    for field in (credentials.connection_string, credentials.client_secret):
        if field is not None:
            secrets.append(field.get_secret_value())
    if credentials.connection_string is not None:
        for part in credentials.connection_string.get_secret_value().split(";"):
            key, _, value = part.partition("=")
            if key.strip().lower() in ("accountkey", "sharedaccesssignature") and value:
                secrets.append(value)
    return tuple(s for s in secrets if s)


def _blob_name(path: str, store: BlobDatastore) -> str:
    segments = path.rstrip("/").split("/")
    if not path.strip("/") or any(s in ("", ".", "..") for s in segments) or "\\" in path:
        raise DatastoreError(f"path {path!r} escapes the {store.describe()} or is empty")
    return "/".join(segments)


def _code(exc: HttpResponseError) -> str:
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or "")


def _digests(path: Path) -> tuple[str, bytes, int]:
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_SIZE):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha256.hexdigest(), md5.digest(), size
