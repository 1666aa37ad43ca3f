"""The fake workspace answers as the real service does: a contract test against recordings.

`tests/integration/recordings/*.json` hold trimmed copies of real Azure ML
responses, taken from the azure-ai-ml SDK's recordings of live traffic
(`Azure/azure-sdk-for-python`, `sdk/ml/azure-ai-ml/tests/recordings/`), or,
for the few calls no recording covers, from the service's published REST
examples; each entry names its source. Each file's requests are replayed, in
order, against a fresh fake workspace over HTTPS; for each, the fake must give
the recorded status code, the recorded headers that matter (a 202's Location),
the same top-level keys, and no key the service does not send below that.
Every route the fake serves (`ROUTES`) must be covered by some entry.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from azure.storage.blob import BlobServiceClient

from tests.integration.aml_fake_workspace import (
    PROVIDER,
    ROUTES,
    TOKEN,
    FakeJob,
    FakeWorkspace,
    FakeWorkspaceServer,
    make_certificate,
)
from tests.services import ACCOUNT_KEY, ACCOUNT_NAME, Azurite

pytestmark = [pytest.mark.integration]

RECORDINGS = Path(__file__).parent / "recordings"
RECORDED_WORKSPACE = re.compile(
    r"^(?:https://[^/]+)?(/history/v1\.0)?/subscriptions/[^/]+/resourceGroups/[^/]+"
    rf"/providers/{PROVIDER}/workspaces/[^/?]+"
)
# Maps whose keys are the caller's data (tag names, input names...), not the schema,
# and `distribution`, whose keys depend on its type (Mpi here, TensorFlow in an example).
DATA_MAPS = frozenset(
    {
        "tags",
        "inputs",
        "outputs",
        "services",
        "jobs",
        "environmentVariables",
        "parameters",
        "distribution",
    }
)


def _files() -> list[Path]:
    return sorted(RECORDINGS.glob("*.json"))


def _entries(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["Entries"])


@pytest.fixture
def served(azurite: Azurite, tmp_path: Path) -> Iterator[FakeWorkspaceServer]:
    container = azurite.new_container_name("contract")
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    cert, key = make_certificate(tmp_path, ["localhost"])
    state = FakeWorkspace(
        subscription="00000000-0000-0000-0000-0000000000cc",
        resource_group="rg-contract",
        workspace="ws-contract",
        datastore="workspaceblobstore",
        container=container,
        compute="cpu-cluster",
        account_name=ACCOUNT_NAME,
        account_key=ACCOUNT_KEY,
        azurite_port=azurite.port,
        # Finished at once: the recorded answers are of settled states.
        schedule=(("Completed", 0.0),),
    )
    with FakeWorkspaceServer(state, cert, key) as server:
        yield server


def _url(ws: FakeWorkspace, recorded_uri: str) -> str:
    """The recorded request's URL, aimed at the fake workspace."""
    parsed = urllib.parse.urlsplit(recorded_uri)
    path = recorded_uri if recorded_uri.startswith("/") else parsed.path
    query = f"?{parsed.query}" if parsed.query else ""
    if path.split("?")[0] == "/discovery" or parsed.path == "/discovery":
        return f"{ws.base_url}/discovery"
    path = path.split("?")[0]
    match = RECORDED_WORKSPACE.match(path)
    if match is None:
        raise ValueError(f"recorded URI {recorded_uri} names no workspace")
    prefix = match.group(1) or ""
    return f"{ws.base_url}{prefix}{ws.workspace_path}{path[match.end() :]}{query}"


def _runs_named(ws: FakeWorkspace, entries: list[dict[str, Any]]) -> None:
    """Run-history reads name runs the file never created: create them as pipeline jobs."""
    for entry in entries:
        found = re.search(r"/runs/([^/]+)/", entry["RequestUri"])
        if found and found.group(1) not in ws.jobs:
            ws.jobs[found.group(1)] = FakeJob(
                body={"properties": {"jobType": "Pipeline", "jobs": {"node": {}}}},
                created=time.monotonic(),
                schedule=ws.schedule,
            )


def _keys(value: Any) -> set[str]:
    return set(value) if isinstance(value, dict) else set()


def assert_shape(fake: Any, recorded: Any, where: str, *, top: bool = True) -> None:
    """Top-level keys equal; below, no key the service does not send; lists by their items."""
    if recorded is None:
        # At the top, no body; below, a value the service left empty (any value fits).
        assert not top or fake in (None, "", {}), f"{where}: no body recorded, the fake {fake!r}"
        return
    if isinstance(recorded, list):
        assert isinstance(fake, list), f"{where}: a list is recorded, the fake gave {fake!r}"
        if recorded and fake:
            assert_shape(fake[0], recorded[0], f"{where}[0]", top=False)
        return
    if not isinstance(recorded, dict):
        return
    assert isinstance(fake, dict), f"{where}: an object is recorded, the fake gave {fake!r}"
    extra = _keys(fake) - _keys(recorded)
    assert not extra, f"{where}: keys the service does not send: {sorted(extra)}"
    if top:
        missing = _keys(recorded) - _keys(fake)
        assert not missing, f"{where}: keys the service sends and the fake does not: {missing}"
    for key in _keys(fake) & _keys(recorded):
        if key in DATA_MAPS:
            continue
        assert_shape(fake[key], recorded[key], f"{where}.{key}", top=False)


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.stem)
def test_the_fake_answers_each_recorded_request_as_the_service_did(
    served: FakeWorkspaceServer, path: Path
) -> None:
    ws = served.state
    entries = _entries(path)
    _runs_named(ws, entries)
    session = requests.Session()
    # Not from the environment: REQUESTS_CA_BUNDLE would override a session's own.
    session.trust_env = False
    session.verify = str(served.cert)
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    location = ""
    for number, entry in enumerate(entries):
        where = f"{path.name}#{number} {entry['route']} ({entry['RequestMethod']})"
        if entry["RequestUri"].startswith("(the Location"):
            url = location
            # As the SDK's poller: follow the operation until it is done.
            deadline = time.monotonic() + 10
            answer = session.get(url)
            while answer.status_code == 202 and time.monotonic() < deadline:
                time.sleep(0.2)
                answer = session.get(url)
        else:
            url = _url(ws, entry["RequestUri"])
            answer = session.request(entry["RequestMethod"], url, json=entry.get("RequestBody"))
        assert answer.status_code == entry["StatusCode"], f"{where}: {answer.text[:300]}"
        for header in entry.get("ResponseHeaders", {}):
            assert header in answer.headers, f"{where}: no {header} header"
        location = answer.headers.get("Location", location)
        body = answer.json() if answer.content else None
        # A run-history record lists many optional fields; the fake sends only those it uses.
        exact = entry["route"] != "run_details_get"
        if entry["ResponseBody"] is None:
            assert_shape(body, None, where)
        else:
            assert_shape(body, entry["ResponseBody"], where, top=exact)
    assert ws.unhandled == []


def test_every_route_the_fake_serves_is_checked_against_a_recording() -> None:
    covered = {entry["route"] for path in _files() for entry in _entries(path)}
    assert covered == set(ROUTES)


def test_every_recording_names_its_source() -> None:
    for path in _files():
        data = json.loads(path.read_text())
        assert data["sources"], path
        for entry in data["Entries"]:
            assert entry["source"].get("kind"), (path, entry["route"])
