"""The deployments end to end, as a user runs them: real server, real worker, real Azurite.

A local Prefect server (SQLite, temporary PREFECT_HOME) and Azurite are
started; `python -m deployments.setup` creates the work pool, the blob
credentials block and the container; `prefect deploy --all` runs from a
fresh copy of the repository that is deleted before anything runs (so
nothing of the folder it ran from may be needed); a process worker started
outside the repository runs what `prefect deployment run ... --param
input_path=...` asks for, with only the block's name as blob credentials.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.schedules import CronSchedule

from deployments.declared import load_deployments
from deployments.serve import load_flow
from flows.datastore.blob import BlobDatastore
from flows.settings import Settings
from tests.conftest import SAMPLE_CSV, TEST_CACHE_DIR
from tests.prefect_server import (
    VENV_BIN,
    BackgroundProcess,
    PrefectServer,
    check_cli,
    wait_final,
)
from tests.services import Azurite

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN = "train-somemodel/weekly"
SCORE = "score-somemodel/weekly"
INPUT_PATH = "raw/2026-11-23/iris.csv"
BLOCK_NAME = "somemodel-blob-e2e"
RUN_TIMEOUT_SECONDS = 600.0
LATEST = "trained_models/latest.json"
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", ".cache", ".datastore", "*_cache", "__pycache__", ".env"
)


@dataclass(frozen=True)
class Stack:
    server: PrefectServer
    worker: BackgroundProcess
    store: BlobDatastore


@pytest.fixture(scope="module")
def stack(
    prefect_server: PrefectServer, azurite: Azurite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    container = azurite.new_container_name("deploy")
    # What the user puts in their shell (or .env) for set-up: the raw credentials.
    setup_env = {
        "SOMEMODEL_DATASTORE": "blob",
        "SOMEMODEL_BLOB_CONTAINER": container,
        "SOMEMODEL_BLOB_CONNECTION_STRING": azurite.connection_string,
        "SOMEMODEL_BLOB_CREDENTIALS_BLOCK": BLOCK_NAME,
    }
    workdir = tmp_path_factory.mktemp("e2e")
    out = check_cli(
        subprocess.run(
            [str(VENV_BIN / "python"), "-m", "deployments.setup"],
            cwd=workdir,
            env=prefect_server.env(setup_env),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        ),
        "python -m deployments.setup",
    )
    assert "somemodel-process" in out
    assert f"Saved the AzureBlobStorageCredentials block {BLOCK_NAME!r}" in out
    assert azurite.connection_string not in out

    store = BlobDatastore.from_settings(
        Settings(
            datastore="blob",
            blob_container=container,
            blob_connection_string=azurite.connection_string,
        )
    )
    store.upload_file(SAMPLE_CSV, INPUT_PATH)

    # A fresh clone elsewhere: deploy from it, then delete it before any run.
    clone = workdir / "clone"
    shutil.copytree(Path(__file__).resolve().parents[2], clone, ignore=COPY_IGNORE)
    check_cli(
        prefect_server.run_cli(["--no-prompt", "deploy", "--all"], cwd=clone),
        "prefect deploy --all",
    )
    shutil.rmtree(clone)

    # The worker knows the container and the block's name, not the connection string.
    worker_env = {
        "SOMEMODEL_DATASTORE": "blob",
        "SOMEMODEL_BLOB_CONTAINER": container,
        "SOMEMODEL_BLOB_CREDENTIALS_BLOCK": BLOCK_NAME,
        "SOMEMODEL_CACHE_DIR": str(TEST_CACHE_DIR),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
    }
    worker = prefect_server.start_background(
        [str(VENV_BIN / "prefect"), "worker", "start", "--pool", "somemodel-process"],
        log=workdir / "worker.log",
        cwd=workdir,
        extra_env=worker_env,
    )
    try:
        yield Stack(prefect_server, worker, store)
    finally:
        worker.stop()
        prefect_server.delete_unfinished_runs()
        sys.stderr.write(f"\n--- worker log (tail) ---\n{worker.log_tail(3000)}\n")


def _run_deployment(stack: Stack, name: str, *params: str) -> subprocess.CompletedProcess[str]:
    args = ["deployment", "run", name]
    for param in params:
        args += ["--param", param]
    return stack.server.run_cli(args, cwd=stack.worker.log.parent)


def _created_run_id(result: subprocess.CompletedProcess[str]) -> UUID:
    out = check_cli(result, "prefect deployment run")
    match = re.search(r"UUID: ([0-9a-f-]{36})", out)
    assert match, out
    return UUID(match.group(1))


def _wait_final(stack: Stack, flow_run_id: UUID) -> FlowRun:
    return wait_final(stack.server, stack.worker, flow_run_id, RUN_TIMEOUT_SECONDS)


def _logs(stack: Stack, flow_run_id: UUID) -> list[tuple[str, str]]:
    logs: list[Any] = []
    with stack.server.client() as client:
        # Page by page: the API returns at most 200 lines at once.
        while page := client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
            limit=200,
            offset=len(logs),
        ):
            logs += page
    return [(log.name or "", log.message) for log in logs]


def _latest(store: BlobDatastore) -> str | None:
    current = store.read_versioned(LATEST)
    return current.text if current else None


@pytest.fixture(scope="module")
def trained(stack: Stack) -> FlowRun:
    assert _latest(stack.store) is None
    flow_run_id = _created_run_id(_run_deployment(stack, TRAIN, f"input_path={INPUT_PATH}"))
    flow_run = _wait_final(stack, flow_run_id)
    assert flow_run.state is not None
    assert flow_run.state.type == StateType.COMPLETED, (
        f"{flow_run.state.message}\n{stack.worker.log_tail()}"
    )
    return flow_run


def test_deploy_from_a_deleted_clone_records_no_path(stack: Stack) -> None:
    with stack.server.client() as client:
        # Set-up's default limit: a third run waits in the queue.
        assert client.read_work_pool("somemodel-process").concurrency_limit == 2
        for name in (TRAIN, SCORE):
            deployment = client.read_deployment_by_name(name)
            assert deployment.path is None
            assert deployment.pull_steps == [{"deployments.pull.use_project_directory": {}}]
            assert deployment.work_pool_name == "somemodel-process"
            assert deployment.parameter_openapi_schema["properties"]["input_path"]["position"] == 0
            assert deployment.job_variables == {"env": {"PREFECT_LOGGING_EXTRA_LOGGERS": "flows"}}


@pytest.mark.parametrize("name", [TRAIN, SCORE])
def test_schedule_is_weekly_with_runs_seven_days_apart(stack: Stack, name: str) -> None:
    declared = {f"{load_flow(spec).name}/{spec.name}": spec for spec in load_deployments()}[name]
    with stack.server.client() as client:
        deployment = client.read_deployment_by_name(name)
        (schedule,) = deployment.schedules
        assert isinstance(schedule.schedule, CronSchedule)
        assert schedule.schedule.cron == declared.schedules[0].cron
        assert schedule.active
        assert deployment.parameters == dict(declared.parameters)
        # The scheduler creates the upcoming runs a few seconds after a deploy.
        deadline = time.monotonic() + 120
        while True:
            scheduled = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id]),
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    ),
                )
            )
            if len(scheduled) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(2)
    assert len(scheduled) >= 3, scheduled
    tz = ZoneInfo(schedule.schedule.timezone or "UTC")
    starts = sorted(run.expected_start_time.astimezone(tz) for run in scheduled)
    assert all(b.date() - a.date() == timedelta(days=7) for a, b in pairwise(starts))
    assert {start.weekday() for start in starts} == {0}
    assert len({start.time() for start in starts}) == 1


def test_cli_run_trains_verifies_and_promotes_the_run_id_named_model(
    stack: Stack, trained: FlowRun
) -> None:
    run_id = trained.name
    assert re.fullmatch(r"train-\d{4}-\d{2}-\d{2}-[0-9a-f]{8}", run_id), run_id
    assert run_id.endswith(str(trained.id).replace("-", "")[:8])
    assert trained.parameters["input_path"] == INPUT_PATH

    assert stack.store.exists(f"trained_models/{run_id}/model.skops")
    metadata_text = stack.store.read_versioned(f"trained_models/{run_id}/metadata.json")
    assert metadata_text is not None
    metadata = json.loads(metadata_text.text)
    assert metadata["run_id"] == run_id
    assert metadata["input_path"] == INPUT_PATH
    latest = _latest(stack.store)
    assert latest is not None
    assert json.loads(latest)["run_id"] == run_id

    with stack.server.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[trained.id]))
        )
    summaries = [a for a in artifacts if a.key == "train-summary"]
    assert summaries, [a.key for a in artifacts]
    assert run_id in str(summaries[0].data)

    # The backends' own loggers reach the run's logs (PREFECT_LOGGING_EXTRA_LOGGERS).
    # The flow-run process sends its last log batch as it exits, which can be after
    # the API already shows the run Completed: wait for it, within a bound.
    deadline = time.monotonic() + 60
    while True:
        logs = _logs(stack, trained.id)
        if any(name.startswith("flows.") and run_id in message for name, message in logs):
            break
        assert time.monotonic() < deadline, [name for name, _ in logs]
        time.sleep(1)


def test_missing_input_fails_with_the_path_and_latest_stays(stack: Stack, trained: FlowRun) -> None:
    latest_before = _latest(stack.store)
    flow_run_id = _created_run_id(_run_deployment(stack, TRAIN, "input_path=raw/missing.csv"))
    flow_run = _wait_final(stack, flow_run_id)
    assert flow_run.state is not None
    assert flow_run.state.type == StateType.FAILED
    # The state message is what the UI shows on the run: it names the input and the fix.
    message = flow_run.state.message or ""
    assert "input 'raw/missing.csv' does not exist" in message, message
    assert "give an existing file" in message
    assert _latest(stack.store) == latest_before
    assert not stack.store.list_files(f"prepared_dataframes/{flow_run.name}")


def test_unsafe_input_path_is_rejected_before_anything_runs(stack: Stack, trained: FlowRun) -> None:
    """Refused by the server's parameter schema, or at the latest by the flow's validation.

    tests/deployments/test_prefect_yaml.py pins the first (the schema carries
    the path pattern); here the guarantee is the user's: nothing runs.
    """
    latest_before = _latest(stack.store)
    result = _run_deployment(stack, TRAIN, "input_path=../x")
    if result.returncode != 0:
        assert "Validation failed for field 'input_path'" in result.stdout + result.stderr
    else:
        flow_run = _wait_final(stack, _created_run_id(result))
        assert flow_run.state is not None
        assert flow_run.state.type == StateType.FAILED
        message = flow_run.state.message or ""
        assert "Validation of flow parameters failed" in message, message
        assert "paths may not leave the datastore" in message
        with stack.server.client() as client:
            assert not client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id]))
            )
    assert _latest(stack.store) == latest_before
