"""A small Azure ML workspace on loopback HTTPS, for the real `MLClient` to talk to.

It answers the ARM paths that `azure-ai-ml` 1.35 calls for what
`flows/compute/aml.py` does (workspace, compute, datastore and its
`listSecrets`, environment and code versions, jobs and their cancel), the
workspace discovery document and the run-history details that `jobs.stream`
reads, and it forwards the storage account's host
(`{account}.blob.core.localhost:{port}`) to Azurite. It keeps state like the
service: what was PUT is what a GET returns, a job's status follows a
schedule from its creation, and every request is recorded with its JSON body
for the tests to check.

Only the behaviour the SDK needs is modelled; an unknown path answers 404
and is listed in `unhandled`, so a test sees when the SDK starts calling
something new.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import ipaddress
import json
import re
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TOKEN = "fake-aml-token"
FINAL_STATES = ("Completed", "Failed", "Canceled", "NotResponding")
PROVIDER = "Microsoft.MachineLearningServices"
LOG_FILE = "user_logs/std_log.txt"
# Headers this server writes itself when it relays Azurite's answer.
_HOP_HEADERS = frozenset({"connection", "transfer-encoding", "content-length", "date", "server"})

# (status, seconds in it), in the service's order: a job PUT answers Starting
# (recordings/job_put_201.json), then Preparing (image build), Queued (waiting
# for a node), Running, Finalizing (outputs uploaded), and a final state. The
# stream reads its first status right after the submission and the next one 2 s
# later (the SDK's minimum poll), so it sees the job in progress, then finished,
# and prints the log once; the 3.3 s leave room for a loaded machine.
DEFAULT_SCHEDULE: tuple[tuple[str, float], ...] = (
    ("Starting", 0.3),
    ("Preparing", 0.3),
    ("Queued", 0.4),
    ("Running", 2.0),
    ("Finalizing", 0.3),
    ("Completed", 0.0),
)
FAILED_SCHEDULE: tuple[tuple[str, float], ...] = (
    ("Starting", 0.1),
    ("Preparing", 0.1),
    ("Queued", 0.1),
    ("Running", 0.5),
    ("Failed", 0.0),
)
ARTIFACT_DATASTORE = "workspaceartifactstore"
SYSTEM_DATA = {
    "createdAt": "2026-01-01T00:00:00.0000000+00:00",
    "createdBy": "fake",
    "createdByType": "User",
    "lastModifiedAt": "2026-01-01T00:00:00.0000000+00:00",
    "lastModifiedBy": "fake",
    "lastModifiedByType": "User",
}


def make_certificate(directory: Path, hostnames: Sequence[str]) -> tuple[Path, Path]:
    """A self-signed certificate for `hostnames` and 127.0.0.1; returns (cert, key) paths.

    It is its own CA (basicConstraints CA:TRUE), so a client trusts it through
    `REQUESTS_CA_BUNDLE` or `connection_verify` without any other bundle.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake Azure ML workspace")])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in hostnames]
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "fake-aml.pem", directory / "fake-aml-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass(frozen=True)
class Recorded:
    method: str
    host: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class FakeJob:
    body: dict[str, Any]
    created: float
    schedule: tuple[tuple[str, float], ...]
    cancelled_at: float | None = None
    error: dict[str, str] | None = None
    log: str = ""

    def status(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "Canceled" if now - self.cancelled_at > 0.2 else "CancelRequested"
        elapsed = now - self.created
        for status, seconds in self.schedule:
            if elapsed < seconds:
                return status
            elapsed -= seconds
        return self.schedule[-1][0]


@dataclass
class FakeWorkspace:
    """The state of one workspace and its storage (an Azurite container)."""

    subscription: str
    resource_group: str
    workspace: str
    datastore: str
    container: str
    compute: str
    account_name: str
    account_key: str
    azurite_port: int
    location: str = "westeurope"
    schedule: tuple[tuple[str, float], ...] = DEFAULT_SCHEDULE
    # The error the run history reports for jobs created while it is set (with a Failed schedule).
    failure: dict[str, str] | None = None
    # When set, the run history answers every read with this status (a 403 for
    # an identity that may not read runs): `jobs.stream` fails at once.
    run_history_error: int | None = None
    # The container job logs are written to, behind the workspaceartifactstore datastore.
    artifact_container: str = "azureml"
    # An identity-based artifact store (no stored key): the SDK lists the logs
    # with the caller's own token, which storage refuses without a data-plane role.
    artifact_store_identity_only: bool = False
    # When set, the datastore points at this container instead of `container`.
    datastore_container: str | None = None
    base_url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    unhandled: list[Recorded] = field(default_factory=list)
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    upload_containers: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def workspace_path(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{PROVIDER}/workspaces/{self.workspace}"
        )

    def bodies(self, method: str, pattern: str) -> list[Any]:
        """The JSON bodies of the recorded requests whose path matches `pattern`."""
        return [r.body for r in self.requests if r.method == method and re.search(pattern, r.path)]

    def sas_token(self, container: str | None = None) -> str:
        return generate_container_sas(
            self.account_name,
            container or self.container,
            account_key=self.account_key,
            permission=ContainerSasPermissions(read=True, write=True, list=True, create=True),
            expiry=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1),
        )

    # --- resources ---------------------------------------------------------------------------

    def workspace_body(self) -> dict[str, Any]:
        """As recordings/workspace_get_200.json: the keys the service returns."""
        storage = f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
        return {
            "id": self.workspace_path,
            "name": self.workspace,
            "type": f"{PROVIDER}/workspaces",
            "location": self.location,
            "tags": {},
            "etag": None,
            "properties": {
                "friendlyName": self.workspace,
                "description": "",
                "storageAccount": (
                    f"{storage}/providers/Microsoft.Storage/storageAccounts/{self.account_name}"
                ),
                "containerRegistry": (
                    f"{storage}/providers/Microsoft.ContainerRegistry/registries/crfake"
                ),
                "provisioningState": "Succeeded",
                "workspaceId": "00000000-0000-0000-0000-000000000001",
                "publicNetworkAccess": "Enabled",
                "discoveryUrl": f"{self.base_url}/discovery",
                "mlFlowTrackingUri": f"azureml://{self.location}.api.azureml.ms/mlflow/v1.0"
                + self.workspace_path,
            },
            "identity": {"type": "SystemAssigned", "principalId": "fake", "tenantId": "fake"},
            "kind": "Default",
            "sku": {"name": "Basic", "tier": "Basic"},
            "systemData": SYSTEM_DATA,
        }

    def compute_body(self) -> dict[str, Any]:
        """As recordings/compute_get_200.json."""
        return {
            "id": f"{self.workspace_path}/computes/{self.compute}",
            "name": self.compute,
            "type": f"{PROVIDER}/workspaces/computes",
            "location": self.location,
            "tags": {},
            "properties": {
                "computeType": "AmlCompute",
                "computeLocation": self.location,
                "provisioningState": "Succeeded",
                "isAttachedCompute": False,
                "disableLocalAuth": False,
                "properties": {
                    "vmSize": "STANDARD_DS3_V2",
                    "vmPriority": "Dedicated",
                    "scaleSettings": {
                        "minNodeCount": 0,
                        "maxNodeCount": 2,
                        "nodeIdleTimeBeforeScaleDown": "PT2M",
                    },
                    "osType": "Linux",
                },
            },
        }

    def datastore_names(self) -> tuple[str, ...]:
        return (self.datastore, ARTIFACT_DATASTORE)

    def datastore_body(self, name: str | None = None) -> dict[str, Any]:
        """As recordings/datastore_get_200.json: a blob container and how to reach it."""
        name = name or self.datastore
        artifacts = name == ARTIFACT_DATASTORE
        if artifacts:
            container = self.artifact_container
        else:
            container = self.datastore_container or self.container
        identity_only = artifacts and self.artifact_store_identity_only
        return {
            "id": f"{self.workspace_path}/datastores/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/datastores",
            "properties": {
                "description": None,
                "tags": None,
                "properties": None,
                "isDefault": not artifacts,
                "credentials": {"credentialsType": "None" if identity_only else "AccountKey"},
                "datastoreType": "AzureBlob",
                "accountName": self.account_name,
                "containerName": container,
                "endpoint": "core.localhost",
                "protocol": "https",
                "serviceDataAccessAuthIdentity": "WorkspaceSystemAssignedIdentity",
            },
            "systemData": SYSTEM_DATA,
        }

    def job_body(self, name: str) -> dict[str, Any]:
        """As recordings/job_put_201.json: status, services, and the default artifact output."""
        job = self.jobs[name]
        body = json.loads(json.dumps(job.body))
        properties = body.setdefault("properties", {})
        properties["status"] = job.status(time.monotonic())
        properties["services"] = {
            "Tracking": {
                "jobServiceType": "Tracking",
                "port": None,
                "endpoint": f"azureml://{self.location}.api.azureml.ms/mlflow/v1.0"
                + f"{self.workspace_path}?",
                "status": None,
                "errorMessage": None,
                "properties": None,
            },
            "Studio": {
                "jobServiceType": "Studio",
                "port": None,
                "endpoint": f"https://ml.fake/runs/{name}?wsid={self.workspace_path}",
                "status": None,
                "errorMessage": None,
                "properties": None,
            },
        }
        # Every command job gets this output: its logs and artifacts, which the
        # SDK's stream lists from storage rather than from the run history.
        outputs = properties.setdefault("outputs", {}) or {}
        properties["outputs"] = outputs
        if properties.get("jobType") == "Command":
            outputs["default"] = {
                "description": None,
                "uri": f"azureml://datastores/{ARTIFACT_DATASTORE}/ExperimentRun/dcid.{name}",
                "mode": "ReadWriteMount",
                "jobOutputType": "uri_folder",
            }
        body["systemData"] = {
            k: SYSTEM_DATA[k] for k in ("createdAt", "createdBy", "createdByType")
        }
        return body

    def run_details(self, name: str) -> dict[str, Any]:
        """A run-history record (the fields of the SDK's `RunDetails` that it reads)."""
        job = self.jobs[name]
        status = job.status(time.monotonic())
        details: dict[str, Any] = {
            "runId": name,
            "runUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
            "status": status,
            "target": self.compute,
            "startTimeUtc": "2026-01-01T00:00:00.000Z",
            "endTimeUtc": None,
            "warnings": None,
            "error": None,
            "properties": {},
            "logFiles": {LOG_FILE: f"{self.base_url}/logs/{name}"},
        }
        if job.error and status == "Failed":
            details["error"] = {"error": job.error}
        return details

    def run_children(self, name: str) -> list[dict[str, Any]]:
        """A pipeline job's child runs (as recorded for `runs/{id}/children`): one per node."""
        job = self.jobs[name]
        status = job.status(time.monotonic())
        nodes = (job.body.get("properties") or {}).get("jobs") or {}
        return [
            {
                "runId": f"{name}-{node}",
                "parentRunId": name,
                "rootRunId": name,
                "status": status,
                "displayName": node,
                "name": node,
                "runType": "azureml.StepRun",
                "properties": {},
                "tags": {},
                "createdUtc": "2026-01-01T00:00:00.000Z",
            }
            for node in nodes
        ]

    def write_job_log(self, name: str, text: str) -> None:
        """The job's user log, where the service puts it: under its default output."""
        service = BlobServiceClient(
            f"http://127.0.0.1:{self.azurite_port}/{self.account_name}",
            credential={"account_name": self.account_name, "account_key": self.account_key},
        )
        box = service.get_container_client(self.artifact_container)
        with contextlib.suppress(ResourceExistsError):
            box.create_container()
        box.upload_blob(f"ExperimentRun/dcid.{name}/{LOG_FILE}", text.encode(), overwrite=True)

    def list_secrets(self, name: str) -> dict[str, Any]:
        """As recordings/datastore_list_secrets_200.json: the account key."""
        return {"secretsType": "AccountKey", "key": self.account_key}

    @property
    def storage_url(self) -> str:
        """The account as the SDK reaches it: host-style, through this server."""
        # `.blob.core.` as in Azure: the storage SDK reads the account name from
        # the host only when it has that form, and needs it to sign with a key.
        port = self.base_url.rsplit(":", 1)[-1]
        return f"https://{self.account_name}.blob.core.localhost:{port}"

    def start_pending_upload(self) -> dict[str, Any]:
        """A fresh container with a SAS for it, as AML hands out for a code snapshot."""
        container = f"code-{uuid.uuid4().hex}"
        service = BlobServiceClient(
            f"http://127.0.0.1:{self.azurite_port}/{self.account_name}",
            credential={"account_name": self.account_name, "account_key": self.account_key},
        )
        service.create_container(container)
        self.upload_containers.append(container)
        sas = self.sas_token(container)
        blob_uri = f"{self.storage_url}/{container}"
        return {
            "pendingUploadId": container,
            "pendingUploadType": "TemporaryBlobReference",
            "blobReferenceForConsumption": {
                "blobUri": blob_uri,
                "storageAccountArmId": None,
                "credential": {"credentialType": "SAS", "sasUri": f"{blob_uri}?{sas}"},
            },
        }

    def put_asset(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A code or environment version, as recordings/{code,environment}_version_put_201.json.

        201 when created, 200 when it replaced an existing version.
        """
        kind, version = re.findall(r"/(codes|environments)/[^/]+/versions/([^/]+)$", path)[0]
        properties = {
            "description": None,
            "tags": {},
            "properties": {},
            "isArchived": False,
            "isAnonymous": False,
            **(body.get("properties") or {}),
        }
        if kind == "environments":
            properties.setdefault("environmentType", "UserCreated")
            properties.setdefault("osType", "Linux")
        stored = {
            "id": path,
            "name": version,
            "type": f"{PROVIDER}/workspaces/{kind}/versions",
            "properties": properties,
            "systemData": SYSTEM_DATA,
        }
        status = 200 if path in self.assets else 201
        self.assets[path] = stored
        return status, stored

    def code_versions_with_hash(self, content_hash: str) -> list[dict[str, Any]]:
        """Code versions with this content hash, under any name.

        The SDK names each snapshot with a fresh uuid and asks under that name;
        it then takes name and version from the id of what comes back, so the
        service matches by hash across names.
        """
        prefix = f"{self.workspace_path}/codes/"
        return [
            asset
            for path, asset in self.assets.items()
            if path.startswith(prefix)
            and asset["properties"]["properties"].get("hash_sha256") == content_hash
        ]

    # --- models: versions are positive integers ------------------------------------------

    def model_container(self, name: str) -> dict[str, Any] | None:
        """As recordings/model_container_get_200.json: latestVersion and nextVersion."""
        versions = self.models.get(name)
        if not versions:
            return None
        latest = max(int(v) for v in versions)
        return {
            "id": f"{self.workspace_path}/models/{name}",
            "name": name,
            "type": f"{PROVIDER}/workspaces/models",
            "properties": {
                "description": None,
                "tags": {},
                "properties": {},
                "isArchived": False,
                "latestVersion": str(latest),
                "nextVersion": str(latest + 1),
            },
            "systemData": SYSTEM_DATA,
        }

    def put_model(self, name: str, version: str, body: dict[str, Any]) -> tuple[int, Any]:
        """As recordings/model_version_put_201.json; a version that is not a positive integer
        is refused the way the service does (400 ModelVersionOutOfRange)."""
        if not (version.isdigit() and int(version) > 0):
            return aml_error(
                400,
                "ModelVersionOutOfRange",
                "Model version must be a positive integer.",
            )
        versions = self.models.setdefault(name, {})
        properties = {
            "description": None,
            "tags": {},
            "properties": {},
            "isArchived": False,
            "isAnonymous": False,
            "flavors": {},
            "jobName": None,
            **(body.get("properties") or {}),
        }
        status = 200 if version in versions else 201
        versions[version] = {
            "id": f"{self.workspace_path}/models/{name}/versions/{version}",
            "name": version,
            "type": f"{PROVIDER}/workspaces/models/versions",
            "properties": properties,
            "systemData": SYSTEM_DATA,
        }
        return status, versions[version]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the recorded requests are the log

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _handle(self) -> None:
        ws = self.server.state
        host = self.headers.get("Host", "")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if host.startswith(f"{ws.account_name}.blob."):
            self._forward_to_azurite(raw)
            return
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        recorded = Recorded(self.command, host, parsed.path, query, body)
        with ws.lock:
            ws.requests.append(recorded)
        if parsed.path == "/discovery":
            # Anonymous, like the service's: the SDK reads it without a token.
            base = ws.base_url
            # The keys of the recorded discovery document; every service is here.
            urls = {
                key: base
                for key in (
                    "api",
                    "catalog",
                    "experimentation",
                    "gallery",
                    "history",
                    "hyperdrive",
                    "labeling",
                    "modelmanagement",
                    "pipelines",
                    "studio",
                )
            }
            self._send(200, json.dumps(urls).encode(), "application/json")
            return
        if parsed.path.startswith("/logs/"):
            job = ws.jobs.get(parsed.path.rsplit("/", 1)[-1])
            self._send(200, (job.log if job else "").encode(), "text/plain")
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._error(401, "InvalidAuthenticationToken", "The access token is invalid.")
            return
        with ws.lock:
            answer = route(ws, self.command, parsed.path, body, query)
        if answer is None:
            ws.unhandled.append(recorded)
            self._error(404, "NotFound", f"fake workspace: nothing at {self.command} {parsed.path}")
            return
        status, payload, headers = answer
        if payload is None:
            self._send(status, b"", "application/json", headers)
        else:
            self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _send(
        self,
        status: int,
        payload: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-request-id", "fake")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(
            status,
            json.dumps({"error": {"code": code, "message": message}}).encode(),
            "application/json",
        )

    def _forward_to_azurite(self, raw: bytes) -> None:
        """Storage over TLS to Azurite over http, the Host kept so it reads the URL host-style.

        Bodies are relayed by Content-Length, which the SDK's blob uploads
        always send; a chunked body would arrive empty.
        """
        ws = self.server.state
        connection = http.client.HTTPConnection("127.0.0.1", ws.azurite_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            connection.request(self.command, self.path, body=raw or None, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_HEADERS:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        finally:
            connection.close()


Answer = tuple[int, Any, dict[str, str]]

# Every route the fake serves, by name: tests/integration/test_aml_fake_contract.py
# checks each against a response the real service gave (tests/integration/recordings/).
ROUTES: dict[str, tuple[str, str]] = {
    "workspace_get": ("GET", r""),
    "compute_get": ("GET", r"/computes/[^/]+"),
    "datastore_get": ("GET", r"/datastores/[^/]+"),
    "datastore_list": ("GET", r"/datastores"),
    "datastore_list_secrets": ("POST", r"/datastores/[^/]+/listSecrets"),
    "environment_version_get": ("GET", r"/environments/[^/]+/versions/[^/]+"),
    "environment_version_put": ("PUT", r"/environments/[^/]+/versions/[^/]+"),
    "code_versions_list": ("GET", r"/codes/[^/]+/versions"),
    "code_start_pending_upload": ("POST", r"/codes/[^/]+/versions/[^/]+/startPendingUpload"),
    "code_version_get": ("GET", r"/codes/[^/]+/versions/[^/]+"),
    "code_version_put": ("PUT", r"/codes/[^/]+/versions/[^/]+"),
    "model_container_get": ("GET", r"/models/[^/]+"),
    "model_versions_list": ("GET", r"/models/[^/]+/versions"),
    "model_version_get": ("GET", r"/models/[^/]+/versions/[^/]+"),
    "model_version_put": ("PUT", r"/models/[^/]+/versions/[^/]+"),
    "job_get": ("GET", r"/jobs/[^/]+"),
    "job_put": ("PUT", r"/jobs/[^/]+"),
    "job_cancel": ("POST", r"/jobs/[^/]+/cancel"),
    "cancel_operation_get": ("GET", r"(operation)"),
    "run_details_get": ("GET", r"(history)/runs/[^/]+/details"),
    "run_children_get": ("GET", r"(history)/runs/[^/]+/children"),
    "discovery_get": ("GET", r"(anonymous)/discovery"),
}


def aml_error(status: int, code: str, message: str, top: str = "UserError") -> tuple[int, Any]:
    """An error body in the service's shape (recordings/model_container_get_404.json)."""
    return status, {
        "error": {
            "code": top,
            "message": message,
            "details": [{"code": code, "message": message, "details": [], "additionalInfo": []}],
            "additionalInfo": [
                {"type": "ComponentName", "info": {"value": "managementfrontend"}},
                {"type": "Environment", "info": {"value": "fake"}},
            ],
        }
    }


def _ok(status: int, payload: Any, headers: dict[str, str] | None = None) -> Answer:
    return status, payload, headers or {}


def _err(answer: tuple[int, Any]) -> Answer:
    return answer[0], answer[1], {}


def _missing(path: str, code: str = "ResourceNotFound") -> Answer:
    return _err(aml_error(404, code, f"{path} was not found", top="UserError"))


def cancel_operation_url(ws: FakeWorkspace, name: str) -> str:
    return (
        f"{ws.base_url}/subscriptions/{ws.subscription}/providers/{PROVIDER}/locations/"
        f"{ws.location}/mfeOperationResults/jc:{ws.workspace}:{name}?api-version=2024-04-01"
    )


def route(
    ws: FakeWorkspace, method: str, path: str, body: Any, query: dict[str, str] | None = None
) -> Answer | None:
    """(status, JSON, headers) for a request the fake models, None for anything else."""
    query = query or {}
    history = re.fullmatch(
        rf"/history/v1\.0{re.escape(ws.workspace_path)}/runs/([^/]+)/(details|children)", path
    )
    if history and method == "GET":
        name, what = history.groups()
        if ws.run_history_error:
            return _err(aml_error(ws.run_history_error, "Forbidden", "run history", "Forbidden"))
        if name not in ws.jobs:
            return _missing(path, "RunNotFound")
        if what == "details":
            return _ok(200, ws.run_details(name))
        return _ok(200, {"value": ws.run_children(name), "continuationToken": None})
    operation = re.fullmatch(
        rf"/subscriptions/{re.escape(ws.subscription)}/providers/{PROVIDER}/locations/"
        rf"[^/]+/mfeOperationResults/jc:{re.escape(ws.workspace)}:([^/]+)",
        path,
    )
    if operation and method == "GET":
        job = ws.jobs.get(operation.group(1))
        if job is None:
            return _missing(path)
        # ARM's long-running-operation protocol: 202 while it runs, 200 when done.
        done = job.status(time.monotonic()) in ("Canceled", "Completed", "Failed")
        return _ok(200 if done else 202, None, {} if done else {"Retry-After": "1"})
    if not path.startswith(ws.workspace_path):
        return None
    rest = path[len(ws.workspace_path) :]
    if rest == "" and method == "GET":
        return _ok(200, ws.workspace_body())
    if rest == f"/computes/{ws.compute}" and method == "GET":
        return _ok(200, ws.compute_body())
    datastore = re.fullmatch(r"/datastores/([^/]+)(/listSecrets)?", rest)
    if datastore:
        name, secrets = datastore.groups()
        if name not in ws.datastore_names():
            return _missing(path, "DatastoreNotFound") if method == "GET" else None
        if secrets and method == "POST":
            return _ok(200, ws.list_secrets(name))
        if not secrets and method == "GET":
            return _ok(200, ws.datastore_body(name))
        return None
    if rest == "/datastores" and method == "GET":
        return _ok(200, {"value": [ws.datastore_body()]})
    codes = re.fullmatch(r"/codes/([^/]+)/versions", rest)
    if codes and method == "GET":
        # The SDK looks for a code version with the same content hash and, when
        # there is one, uses it instead of uploading the snapshot again.
        found = ws.code_versions_with_hash(query.get("hash", ""))
        return _ok(200, {"value": found, "nextLink": None})
    pending = re.fullmatch(r"/codes/([^/]+)/versions/([^/]+)/startPendingUpload", rest)
    if pending and method == "POST":
        return _ok(200, ws.start_pending_upload())
    if re.fullmatch(r"/(environments|codes)/[^/]+/versions/[^/]+", rest):
        if method == "GET":
            return _ok(200, ws.assets[path]) if path in ws.assets else _missing(path)
        if method == "PUT" and isinstance(body, dict):
            return _ok(*ws.put_asset(path, body))
        return None
    model = re.fullmatch(r"/models/([^/]+)(/versions)?(?:/([^/]+))?", rest)
    if model:
        name, versions, version = model.groups()
        if not versions and version is None and method == "GET":
            container = ws.model_container(name)
            return _ok(200, container) if container else _missing(path, "ModelNotFound")
        if versions and version is None and method == "GET":
            listed = list(ws.models.get(name, {}).values())
            return _ok(200, {"value": listed, "nextLink": None})
        if versions and version is not None:
            stored = ws.models.get(name, {}).get(version)
            if method == "GET":
                return _ok(200, stored) if stored else _missing(path, "ModelNotFound")
            if method == "PUT" and isinstance(body, dict):
                status, payload = ws.put_model(name, version, body)
                return _ok(status, payload)
        return None
    job = re.fullmatch(r"/jobs/([^/]+)(/cancel)?", rest)
    if job:
        name, cancel = job.group(1), job.group(2)
        if cancel and method == "POST":
            if name not in ws.jobs:
                return _missing(path)
            fake = ws.jobs[name]
            if fake.cancelled_at is None and fake.status(time.monotonic()) not in FINAL_STATES:
                fake.cancelled_at = time.monotonic()
            # Accepted, with where to follow the cancellation (the SDK's poller does).
            headers = {"Location": cancel_operation_url(ws, name), "Retry-After": "1"}
            return _ok(202, None, headers)
        if method == "GET":
            return _ok(200, ws.job_body(name)) if name in ws.jobs else _missing(path)
        if method == "PUT" and isinstance(body, dict):
            if name in ws.jobs:
                # What the service answers for a job name that is taken: 400, not 409.
                return _err(
                    aml_error(
                        400,
                        "JobAlreadyExists",
                        f"A job with this name already exists: {name}",
                    )
                )
            ws.jobs[name] = FakeJob(
                body={**body, "id": path, "name": name, "type": f"{PROVIDER}/workspaces/jobs"},
                created=time.monotonic(),
                schedule=ws.schedule,
                error=ws.failure,
                log=f"{name}: step output\n",
            )
            ws.write_job_log(name, ws.jobs[name].log)
            return _ok(201, ws.job_body(name))
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: FakeWorkspace, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.socket = context.wrap_socket(self.socket, server_side=True)


class FakeWorkspaceServer:
    """`FakeWorkspace` served on https://127.0.0.1:`port` in a background thread."""

    def __init__(self, state: FakeWorkspace, cert: Path, key: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.state = state
        self.cert = cert
        self._server = _Server(state, context)
        self.port = int(self._server.server_address[1])
        state.base_url = f"https://localhost:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-aml-workspace", daemon=True
        )

    def __enter__(self) -> FakeWorkspaceServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def cloud_metadata(self) -> dict[str, str]:
        """A custom cloud for `MLClient(cloud=..., cloud_metadata=...)`: ARM and storage here."""
        base = self.state.base_url + "/"
        return {
            "azure_portal": base,
            "resource_manager": base,
            "active_directory": base,
            "aml_resource_id": base,
            # Storage URLs are https://{account}.blob.{this}: the same server, by host name.
            "storage_endpoint": f"core.localhost:{self.port}",
            "registry_discovery_endpoint": base,
        }
