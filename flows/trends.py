"""The runs' history in the Prefect UI, and the drift alert: keyed artifacts, a tag, a state.

Prefect keeps every version of an artifact key, so one key per deployment
gives each deployment a history: `drift-{deployment}` (a table per scoring
run: PSI per feature), `drift-trend-{deployment}` and
`training-trend-{deployment}` (the weeks so far, read from the datastore,
flows/history.py). A drifted scoring run gets the tag `drift` and ends
Completed as `Drifted`, which deployments/automations.py announces like a
failure; its predictions are written and promoted all the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.runtime import deployment, flow_run
from prefect.states import Completed, State

from flows.datastore.base import Datastore
from flows.drift import DriftCheck, check_drift_report, read_drift_report
from flows.history import artifact_key, read_history
from flows.scoring import PredictionsRef
from flows.settings import Settings

# The final state's name of a scoring run that drifted (event `prefect.flow-run.Drifted`).
DRIFTED = "Drifted"
DRIFT_TAG = "drift"


@task(cache_policy=NO_CACHE)
def check_drift(
    datastore: Datastore, settings: Settings, predictions: PredictionsRef
) -> DriftCheck:
    """The drift report next to the predictions, judged against SOMEMODEL_DRIFT_PSI_THRESHOLD."""
    report = read_drift_report(datastore, predictions.run_id)
    check = check_drift_report(report, predictions.run_id, settings.drift_psi_threshold)
    (get_run_logger().warning if check.drifted else get_run_logger().info)(check.summary_line())
    return check


@task(cache_policy=NO_CACHE)
def record_history(
    datastore: Datastore, settings: Settings, kind: str, drift: DriftCheck | None = None
) -> None:
    """This run's drift table (scoring) and the trend of the weeks so far, under the
    deployment's keys.
    """
    name = deployment.name
    if drift is not None and drift.features:
        create_table_artifact(
            key=artifact_key("drift", name),
            table=drift.table(),
            description=f"{flow_run.name}: {drift.summary_line()}",
        )
    history = read_history(
        datastore,
        now=datetime.now(UTC),
        weeks=settings.history_weeks,
        threshold=settings.drift_psi_threshold,
    )
    create_markdown_artifact(
        key=artifact_key(f"{kind}-trend", name),
        markdown=history.to_markdown(),
        description=f"The last {settings.history_weeks} weeks, as of {flow_run.name}",
    )


def alert_on_drift(summary: Any, drift: DriftCheck) -> Any:
    """The flow's return: the summary, or (drifted) a `Drifted` Completed state carrying it,
    with the run tagged `drift`.
    """
    if not drift.drifted:
        return summary
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.id)
        client.update_flow_run(flow_run.id, tags=sorted({*run.tags, DRIFT_TAG}))
    state: State[Any] = Completed(data=summary, message=drift.summary_line(), name=DRIFTED)
    return state
