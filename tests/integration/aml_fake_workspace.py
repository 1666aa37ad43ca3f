"""A small Azure ML workspace on loopback HTTPS, for the real `MLClient` to talk to.

It answers the ARM paths that `azure-ai-ml` 1.35 calls for what
`flows/compute/aml.py` does (workspace, compute, datastore and its
`listSecrets`, environment and code versions, jobs and their cancel), the
workspace discovery document and the run-history details that `jobs.stream`
reads, and it forwards the storage account's host
(`{account}.blob.localhost:{port}`) to Azurite. It keeps state like the
service: what was PUT is what a GET returns, a job's status follows a
schedule from its creation, and every request is recorded with its JSON body
for the tests to check.

Only the behaviour the SDK needs is modelled; an unknown path answers 404
and is listed in `unhandled`, so a test sees when the SDK starts calling
something new.
"""

from __future__ import annotations

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

from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TOKEN = "fake-aml-token"
PROVIDER = "Microsoft.MachineLearningServices"
LOG_FILE = "user_logs/std_log.txt"
# Headers this server writes itself when it relays Azurite's answer.
_HOP_HEADERS = frozenset({"connection", "transfer-encoding", "content-length", "date", "server"})

# (status, seconds in it): the stream reads its first status right after the
# submission and the next one 2 s later (the SDK's minimum poll), so it sees
# the job in progress, then finished, and prints the log once. The 3 s leave
# room for a loaded machine between the submission and that first read.
DEFAULT_SCHEDULE: tuple[tuple[str, float], ...] = (
    ("Queued", 1.0),
    ("Running", 2.0),
    ("Completed", 0.0),
)


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
    base_url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    unhandled: list[Recorded] = field(default_factory=list)
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
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
        return {
            "id": self.workspace_path,
            "name": self.workspace,
            "type": f"{PROVIDER}/workspaces",
            "location": self.location,
            "kind": "Default",
            "properties": {
                "friendlyName": self.workspace,
                "workspaceId": "00000000-0000-0000-0000-000000000001",
                "discoveryUrl": f"{self.base_url}/discovery",
                "provisioningState": "Succeeded",
            },
        }

    def compute_body(self) -> dict[str, Any]:
        return {
            "id": f"{self.workspace_path}/computes/{self.compute}",
            "name": self.compute,
            "type": f"{PROVIDER}/workspaces/computes",
            "location": self.location,
            "properties": {
                "computeType": "AmlCompute",
                "provisioningState": "Succeeded",
                "properties": {
                    "vmSize": "STANDARD_DS3_V2",
                    "scaleSettings": {"minNodeCount": 0, "maxNodeCount": 2},
                },
            },
        }

    def datastore_body(self) -> dict[str, Any]:
        return {
            "id": f"{self.workspace_path}/datastores/{self.datastore}",
            "name": self.datastore,
            "type": f"{PROVIDER}/workspaces/datastores",
            "properties": {
                "datastoreType": "AzureBlob",
                "accountName": self.account_name,
                "containerName": self.container,
                "endpoint": "localhost",
                "protocol": "https",
                "isDefault": True,
                "credentials": {"credentialsType": "AccountKey"},
            },
        }

    def job_body(self, name: str) -> dict[str, Any]:
        job = self.jobs[name]
        body = json.loads(json.dumps(job.body))
        properties = body.setdefault("properties", {})
        properties["status"] = job.status(time.monotonic())
        properties["services"] = {
            "Studio": {
                "jobServiceType": "Studio",
                "endpoint": f"https://ml.fake/runs/{name}?wsid={self.workspace_path}",
            }
        }
        return body

    def run_details(self, name: str) -> dict[str, Any]:
        job = self.jobs[name]
        status = job.status(time.monotonic())
        details: dict[str, Any] = {
            "runId": name,
            "status": status,
            "logFiles": {LOG_FILE: f"{self.base_url}/logs/{name}"},
        }
        if job.error and status == "Failed":
            details["error"] = {"error": job.error}
        return details

    @property
    def storage_url(self) -> str:
        """The account as the SDK reaches it: host-style, through this server."""
        return f"https://{self.account_name}.blob.{self.base_url.removeprefix('https://')}"

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

    def put_asset(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        stored = {
            **body,
            "id": path,
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/assets",
            "systemData": {"createdAt": "2026-01-01T00:00:00Z", "createdBy": "fake"},
        }
        stored.setdefault("properties", {})["provisioningState"] = "Succeeded"
        self.assets[path] = stored
        return stored


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
            urls = {"api": base, "catalog": base, "experimentation": base, "history": base}
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
            answer = _route(ws, self.command, parsed.path, body)
        if answer is None:
            ws.unhandled.append(recorded)
            self._error(404, "NotFound", f"fake workspace: nothing at {self.command} {parsed.path}")
            return
        status, payload = answer
        if payload is None:
            self._send(status, b"", "application/json")
        else:
            self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-ms-request-id", "fake")
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


def _route(
    ws: FakeWorkspace, method: str, path: str, body: Any
) -> tuple[int, dict[str, Any] | None] | None:
    """(status, JSON) for a request the fake models, None for anything else."""
    history = re.fullmatch(
        rf"/history/v1\.0{re.escape(ws.workspace_path)}/runs/([^/]+)/details", path
    )
    if history and method == "GET" and ws.run_history_error:
        return ws.run_history_error, {"error": {"code": "Forbidden", "message": "run history"}}
    if history and method == "GET":
        name = history.group(1)
        return (200, ws.run_details(name)) if name in ws.jobs else _missing(path)
    if not path.startswith(ws.workspace_path):
        return None
    rest = path[len(ws.workspace_path) :]
    if rest == "" and method == "GET":
        return 200, ws.workspace_body()
    if rest == f"/computes/{ws.compute}" and method == "GET":
        return 200, ws.compute_body()
    if rest == f"/datastores/{ws.datastore}" and method == "GET":
        return 200, ws.datastore_body()
    if rest == "/datastores" and method == "GET":
        return 200, {"value": [ws.datastore_body()]}
    if rest == f"/datastores/{ws.datastore}/listSecrets" and method == "POST":
        return 200, {"secretsType": "Sas", "sasToken": ws.sas_token()}
    versions = re.fullmatch(r"/(environments|codes)/([^/]+)/versions", rest)
    if versions and method == "GET":
        # The SDK looks for a code version with the same content hash; none has one here.
        return 200, {"value": []}
    pending = re.fullmatch(r"/codes/([^/]+)/versions/([^/]+)/startPendingUpload", rest)
    if pending and method == "POST":
        return 200, ws.start_pending_upload()
    if re.fullmatch(r"/(environments|codes)/[^/]+(/versions/[^/]+)?", rest):
        if method == "GET":
            return (200, ws.assets[path]) if path in ws.assets else _missing(path)
        if method == "PUT" and isinstance(body, dict):
            return 200, ws.put_asset(path, body)
        return None
    job = re.fullmatch(r"/jobs/([^/]+)(/cancel)?", rest)
    if job:
        name, cancel = job.group(1), job.group(2)
        if cancel and method == "POST" and name in ws.jobs:
            ws.jobs[name].cancelled_at = time.monotonic()
            return 202, None
        if method == "GET":
            return (200, ws.job_body(name)) if name in ws.jobs else _missing(path)
        if method == "PUT" and isinstance(body, dict):
            if name not in ws.jobs:
                ws.jobs[name] = FakeJob(
                    body={**body, "id": path, "name": name, "type": f"{PROVIDER}/workspaces/jobs"},
                    created=time.monotonic(),
                    schedule=ws.schedule,
                    error=ws.failure,
                    log=f"{name}: step output\n",
                )
            return 201, ws.job_body(name)
    return None


def _missing(path: str) -> tuple[int, dict[str, Any]]:
    return 404, {"error": {"code": "ResourceNotFound", "message": f"{path} was not found"}}


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
            "storage_endpoint": f"localhost:{self.port}",
            "registry_discovery_endpoint": base,
        }
