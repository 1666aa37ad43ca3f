"""Storage under stress: racing promotions, transient and permanent errors.

Racing promotions run on both datastores (a folder, and Azurite with ETag
conditions); the fault injection sits at azure-core's HTTP transport, the one
seam under the real SDK and its real retry policy.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import RequestsTransport, RequestsTransportResponse
from azure.storage.blob import ExponentialRetry

import flows.datastore.blob as blob_module
from flows.datastore import Datastore, DatastoreError, LocalDatastore
from flows.datastore.blob import BlobDatastore
from flows.registry import promote
from flows.settings import Settings
from tests.reliability.conftest import model_ref
from tests.services import Azurite, blob_datastore

LATEST = "trained_models/latest.json"


@pytest.fixture(params=["local", pytest.param("blob", marks=pytest.mark.integration)])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Datastore:
    if request.param == "local":
        return LocalDatastore(tmp_path / "root")
    azurite: Azurite = request.getfixturevalue("azurite")
    store = blob_datastore(azurite, azurite.new_container_name("race"))
    store.create_container()
    return store


def test_racing_promotions_end_at_the_newest_and_latest_is_always_valid_json(
    any_store: Datastore,
) -> None:
    refs = [model_ref(f"train-race-{i}", f"2026-11-23T10:00:{i:02d}+00:00") for i in range(6)]
    barrier = threading.Barrier(len(refs) + 1)
    done = threading.Event()
    observed: list[str] = []
    errors: list[BaseException] = []

    # The oldest promotion goes first; the others wait until the reader has seen its
    # latest.json, so the reader is reading while they race (a fast store could
    # otherwise finish them all before the reader thread first runs).
    seen = threading.Event()

    def reader() -> None:
        barrier.wait()
        while not done.is_set():
            current = any_store.read_versioned(LATEST)
            if current is not None:
                observed.append(json.loads(current.text)["run_id"])  # must parse, always
                seen.set()

    def promoter(i: int) -> None:
        barrier.wait()
        if i > 0:
            seen.wait(timeout=60)
        try:
            promote(any_store, refs[i])
        except BaseException as exc:
            errors.append(exc)

    watcher = threading.Thread(target=reader)
    watcher.start()
    threads = [threading.Thread(target=promoter, args=(i,)) for i in reversed(range(len(refs)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert errors == []
    final = any_store.read_versioned(LATEST)
    assert final is not None
    assert json.loads(final.text)["run_id"] == "train-race-5"
    assert observed, "the reader never saw latest.json: the test proved nothing"


class FlakyTransport(RequestsTransport):
    """The real HTTP transport, except that the first `failures` requests matching
    `method` get `status` back without reaching the server. Counts attempts."""

    def __init__(self, method: str, status: int, failures: int) -> None:
        super().__init__()
        self.method = method
        self.status = status
        self.failures = failures
        self.attempts = 0

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def,override]
        if request.method != self.method:
            return super().send(request, **kwargs)
        self.attempts += 1
        if self.attempts > self.failures:
            return super().send(request, **kwargs)
        if self.status == 0:
            raise ServiceRequestError("connection reset by peer (injected)")
        fake = requests.Response()
        fake.status_code = self.status
        fake.reason = "Injected"
        fake.headers["x-ms-error-code"] = "ServerBusy" if self.status >= 500 else "InvalidInput"
        fake.headers["Content-Length"] = "0"
        fake._content = b""
        fake.request = requests.Request(request.method, request.url).prepare()
        return RequestsTransportResponse(request, fake)


@pytest.fixture
def flaky(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    # The SDK's back-off grows 2, 4, 8 s whatever the initial one: these tests count attempts.
    monkeypatch.setattr(ExponentialRetry, "get_backoff_time", lambda self, settings: 0)
    container = azurite.new_container_name("flaky")
    blob_datastore(azurite, container).create_container()

    def make(method: str, status: int, failures: int) -> tuple[BlobDatastore, FlakyTransport]:
        transport = FlakyTransport(method, status, failures)
        monkeypatch.setitem(blob_module._CLIENT_TUNING, "transport", transport)
        settings = Settings(
            datastore="blob",
            blob_container=container,
            blob_connection_string=azurite.connection_string,
        )
        return BlobDatastore.from_settings(settings, retry_total=3, initial_backoff=0), transport

    return make


@pytest.mark.integration
@pytest.mark.parametrize(
    "status",
    [
        0,  # connection reset
        500,
        503,
        429,
    ],
    ids=["reset", "500", "503", "429"],
)
def test_transient_errors_are_retried_then_succeed(flaky, tmp_path: Path, status: int) -> None:
    store, transport = flaky("PUT", status, failures=2)
    src = tmp_path / "a.csv"
    src.write_text("a,b\n1,2\n")
    store.upload_file(src, "raw/a.csv")
    assert transport.attempts == 3
    assert store.exists("raw/a.csv")


@pytest.mark.integration
@pytest.mark.parametrize("status", [503, 429])
def test_transient_errors_are_retried_a_bounded_number_of_times(
    flaky, tmp_path: Path, status: int
) -> None:
    store, transport = flaky("PUT", status, failures=100)
    src = tmp_path / "a.csv"
    src.write_text("a,b\n1,2\n")
    with pytest.raises(DatastoreError, match=str(status)):
        store.upload_file(src, "raw/a.csv")
    assert transport.attempts == 4, "one try and retry_total=3 retries, no more"


@pytest.mark.integration
@pytest.mark.parametrize("status", [400, 403, 404])
def test_permanent_errors_are_not_retried(flaky, tmp_path: Path, status: int) -> None:
    store, transport = flaky("PUT", status, failures=1)
    src = tmp_path / "a.csv"
    src.write_text("a,b\n1,2\n")
    with pytest.raises(DatastoreError):
        store.upload_file(src, "raw/a.csv")
    assert transport.attempts == 1
