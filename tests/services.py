"""Real services the tests start themselves: Azurite, the Azure Blob emulator.

The harness installs nothing: `make test` (and `.ci/run`) run `npm ci`, which
puts the pinned `azurite` in node_modules. The fixture starts `azurite-blob`
on a free loopback port with a temporary location and stops it at the end of
the session; `stop()` and `start()` let a test take it away mid-run (it comes
back on the same port with the same data).
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from flows.datastore.blob import BlobDatastore

REPO_ROOT = Path(__file__).resolve().parents[1]
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"

# Azurite's well-known development account (public, in Microsoft's docs). It is
# still handled as a secret: tests check it never shows in a message or a log.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
# Valid base64 of the right length, but not the account's key: requests are signed, then refused.
WRONG_KEY = base64.b64encode(b"not the key of this account, but valid base64." * 2).decode()
STARTUP_TIMEOUT_SECONDS = 60.0


class ServiceStartError(RuntimeError):
    """A test service is not installed or did not start; the message says what to run."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Azurite:
    """One `azurite-blob` process on 127.0.0.1:`port`, storing its data in `location`."""

    def __init__(self, location: Path, port: int | None = None) -> None:
        self.location = location
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log = location.parent / f"azurite-{self.port}.log"

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    @property
    def account_key(self) -> str:
        return ACCOUNT_KEY

    @property
    def connection_string(self) -> str:
        return self.connection_string_with_key(ACCOUNT_KEY)

    def connection_string_with_key(self, key: str) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        if not AZURITE_BIN.exists():
            raise ServiceStartError(
                f"{AZURITE_BIN.relative_to(REPO_ROOT)} is missing: run `make test` (or `npm ci` "
                "in the repository root) to install the pinned Azurite"
            )
        self.location.mkdir(parents=True, exist_ok=True)
        argv = [
            str(AZURITE_BIN),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--location",
            str(self.location),
            # azurite 3.35 (the last for Node 20) rejects the API version that
            # azure-storage-blob 12.31 sends unless told not to check it.
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            "--silent",
        ]
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self._wait_until_answering()

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise ServiceStartError(f"azurite-blob exited during startup:\n{self._log_tail()}")
            try:
                # Any HTTP answer (an unauthenticated request gets 403) means it serves.
                with urllib.request.urlopen(f"{self.blob_endpoint}?comp=list", timeout=2):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise ServiceStartError(
            f"azurite-blob did not answer on port {self.port} within "
            f"{STARTUP_TIMEOUT_SECONDS:.0f} s:\n{self._log_tail()}"
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _log_tail(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return "(no output)"

    def new_container_name(self, prefix: str = "test") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"


def start_azurite(location: Path) -> Azurite:
    azurite = Azurite(location)
    azurite.start()
    return azurite


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A running Azurite blob endpoint for the whole session (stopped at the end)."""
    location = tmp_path_factory.mktemp("azurite")
    try:
        service = start_azurite(location / "data")
    except ServiceStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield service
    finally:
        service.stop()
        shutil.rmtree(location, ignore_errors=True)


def blob_datastore(azurite: Azurite, container: str, *, key: str | None = None) -> BlobDatastore:
    """A BlobDatastore on `container` (not created), quick to give up when Azurite is away."""
    from flows.datastore.blob import BlobDatastore
    from flows.settings import Settings

    settings = Settings(
        datastore="blob",
        blob_container=container,
        blob_connection_string=azurite.connection_string_with_key(key or ACCOUNT_KEY),
    )
    return BlobDatastore.from_settings(settings, retry_total=1, initial_backoff=0)
