"""A real Prefect server refuses bad parameters in words, and creates no run.

The deployments are registered as `prefect deploy` registers them (the flow's
`parameter_schema`, through a RunnerDeployment), then made strict by
`deployments.parameters`, under a name of their own so that no other test's
`weekly` deployments change. No worker: a refused run must not exist at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from deployments.declared import load_deployments, load_flow
from deployments.parameters import refuse_unknown_parameters
from tests.prefect_server import AUTH_STRING, PrefectServer

NAME = "refusals"
PATH_RULE = (
    "\"a path inside the datastore such as raw/2026-11-23.csv: no '..', no absolute path, "
    'no URL; names of letters, digits, spaces and . _ - = + separated by single slashes"'
)


@pytest.fixture(scope="module")
def deployed(prefect_server: PrefectServer) -> Iterator[dict[str, UUID]]:
    """Flow name -> id of its `refusals` deployment on the session's server."""
    specs = [dataclasses.replace(spec, name=NAME) for spec in load_deployments()]
    ids = {}
    updates = {PREFECT_API_URL: prefect_server.api_url, PREFECT_API_AUTH_STRING: AUTH_STRING}
    with temporary_settings(updates=updates):
        for spec in specs:
            flow = load_flow(spec)
            ids[flow.name] = flow.to_deployment(name=NAME, description=spec.description).apply()
        lines = refuse_unknown_parameters(specs)
        assert all("refuses unknown parameter names" in line for line in lines), lines
        assert refuse_unknown_parameters(specs)[0].endswith(
            "already refuses unknown parameter names"
        )
    yield ids
    with prefect_server.client() as client:
        for deployment_id in ids.values():
            client.delete_deployment(deployment_id)


def _create_run(
    server: PrefectServer, deployment_id: UUID, parameters: dict[str, Any]
) -> httpx.Response:
    """POST /deployments/{id}/create_flow_run, as a script or another service would."""
    return httpx.post(
        f"{server.api_url}/deployments/{deployment_id}/create_flow_run",
        json={"parameters": parameters},
        auth=tuple(AUTH_STRING.split(":", 1)),  # type: ignore[arg-type]
        timeout=30,
    )


def _runs_of(server: PrefectServer, deployment_id: UUID) -> list[Any]:
    with server.client() as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


@pytest.mark.parametrize(
    ("flow_name", "parameters", "detail"),
    [
        (
            "train-somemodel",
            {"inputpath": "raw/x.csv"},
            "Error creating flow run: Validation failed. Failure reason: "
            "Additional properties are not allowed ('inputpath' was unexpected)",
        ),
        (
            "train-somemodel",
            {"input_path": "../../etc"},
            "Error creating flow run: Validation failed for field 'input_path'. "
            f"Failure reason: '../../etc' does not match {PATH_RULE}",
        ),
        (
            "score-somemodel",
            {"model": "../../etc"},
            "Error creating flow run: Validation failed for field 'model'. Failure reason: "
            "'../../etc' does not match "
            "'latest, or the run id of a training run such as train-2026-11-23-1a2b3c4d'",
        ),
        (
            "cleanup-somemodel",
            {"older_than_days": -1},
            "Error creating flow run: Validation failed for field 'older_than_days'. "
            "Failure reason: -1 is less than the minimum of 0",
        ),
    ],
    ids=["unknown-name", "input_path", "model", "older_than_days"],
)
def test_a_bad_parameter_is_refused_with_409_in_words_and_no_run_exists(
    prefect_server: PrefectServer,
    deployed: dict[str, UUID],
    flow_name: str,
    parameters: dict[str, Any],
    detail: str,
) -> None:
    answer = _create_run(prefect_server, deployed[flow_name], parameters)
    assert answer.status_code == 409, answer.text
    assert answer.json() == {"detail": detail}
    assert _runs_of(prefect_server, deployed[flow_name]) == []


def test_a_training_run_id_as_model_is_accepted(
    prefect_server: PrefectServer, deployed: dict[str, UUID]
) -> None:
    answer = _create_run(
        prefect_server, deployed["score-somemodel"], {"model": "train-2026-11-23-1a2b3c4d"}
    )
    assert answer.status_code == 201, answer.text
    with prefect_server.client() as client:
        client.delete_flow_run(UUID(answer.json()["id"]))
