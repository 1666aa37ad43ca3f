"""A run's artifacts: the markdown summary people read in the UI, the same as JSON for callers.

A script or service that started a run through the REST API reads its result
as the `*-result` artifact's `data` (`POST /api/artifacts/filter`, docs/api.md):
the artifact is stored in the Prefect database, so reading it needs the API's
credentials only. The flow's return value is not used for that: Prefect keeps
it in result storage (a folder of the worker, or a bucket), not in the API.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.utilities.context import get_task_and_flow_run_ids

# Not one of the types the UI renders specially: it shows the data as JSON.
RESULT_ARTIFACT_TYPE = "json"


class Reportable(Protocol):
    artifact_key: str
    result_key: str

    @property
    def description(self) -> str: ...

    def to_markdown(self) -> str: ...

    def to_result(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Reportable)


def report(summary: R) -> R:
    """Attach `summary` to the current flow run as markdown and as JSON; returns it."""
    create_markdown_artifact(
        key=summary.artifact_key, markdown=summary.to_markdown(), description=summary.description
    )
    # Through the client: `prefect.artifacts.Artifact` would store the data as a JSON string.
    task_run_id, flow_run_id = get_task_and_flow_run_ids()
    with get_client(sync_client=True) as client:
        client.create_artifact(
            ArtifactCreate(
                type=RESULT_ARTIFACT_TYPE,
                key=summary.result_key,
                data=summary.to_result(),
                description=f"{summary.description}: the result as JSON (docs/api.md)",
                flow_run_id=flow_run_id,
                task_run_id=task_run_id,
            )
        )
    return summary
