"""The API as set up (docs/api.md, "Authentication"): no credentials, no run.

The session's server runs with PREFECT_SERVER_API_AUTH_STRING, as the
documented server does; a script's create-run request without the credentials
is refused, and the same request with them creates the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import httpx
import pytest

from tests.prefect_server import AUTH_STRING, PrefectServer


@pytest.fixture
def create_run_url(prefect_server: PrefectServer) -> Iterator[str]:
    """The create-run endpoint of a throwaway deployment (no work pool: nothing runs)."""
    with prefect_server.client() as client:
        flow_id = client.create_flow_from_name("api-auth-probe")
        deployment_id = client.create_deployment(flow_id=flow_id, name="probe")
    try:
        yield f"{prefect_server.api_url}/deployments/{deployment_id}/create_flow_run"
    finally:
        with prefect_server.client() as client:
            client.delete_deployment(deployment_id)


def test_a_run_is_refused_without_credentials_and_created_with_them(
    prefect_server: PrefectServer, create_run_url: str
) -> None:
    user, password = AUTH_STRING.split(":", 1)
    body = {"parameters": {}}

    for auth in (None, (user, "not-the-password")):
        refused = httpx.post(create_run_url, json=body, auth=auth, timeout=30)
        assert refused.status_code == 401, refused.text
        assert refused.json() == {"exception_message": "Unauthorized"}
    # A Prefect Cloud style API key is no credential for a self-hosted server.
    bearer = httpx.post(
        create_run_url, json=body, headers={"Authorization": "Bearer pnu_x"}, timeout=30
    )
    assert bearer.status_code == 401

    accepted = httpx.post(create_run_url, json=body, auth=(user, password), timeout=30)
    assert accepted.status_code == 201, accepted.text
    with prefect_server.client() as client:
        client.delete_flow_run(UUID(accepted.json()["id"]))
    # Health checks stay open (load balancers, the harness's own start-up wait).
    assert httpx.get(f"{prefect_server.api_url}/health", timeout=30).status_code == 200
