"""The deployments end to end, as a user runs them: real server, real worker, real Azurite.

A local Prefect server (SQLite, temporary PREFECT_HOME) and Azurite are
started; `python -m deployments.setup` creates the work pool, the blob
credentials block and the container; `prefect deploy --all` and
`python -m deployments.parameters` run from a fresh copy of the repository
that is deleted before anything runs (so nothing of the folder it ran from
may be needed); a process worker started
outside the repository runs what `prefect deployment run ... --param
input_path=...` asks for, with only the block's name as blob credentials.
The server protects its API with basic auth (docs/api.md); every client here
sends the credentials.

docs/api.md's commands are run as written: its curl recipe starts the training
run the other tests check, its Python script the run with a missing input, and
its status-code examples answer what their comments say.
"""

from __future__ import annotations

import importlib.util
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
    FlowRunFilterState,
    FlowRunFilterStateType,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import PrefectHTTPStatusError

from deployments.declared import load_deployments
from deployments.serve import load_flow
from flows.datastore.blob import BlobDatastore
from flows.settings import Settings
from tests.api_doc import doc_blocks
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
INPUT_PATH = "raw/2026-11-23.csv"  # the path docs/api.md's examples use
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
    out = check_cli(
        subprocess.run(
            [str(VENV_BIN / "python"), "-m", "deployments.parameters"],
            cwd=clone,
            env=prefect_server.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        ),
        "python -m deployments.parameters",
    )
    assert out.count("refuses unknown parameter names") == 3, out
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


def json_documents(text: str) -> list[Any]:
    """The JSON values printed one after another in `text`."""
    decoder, found, at = json.JSONDecoder(), [], 0
    text = text.strip()
    while at < len(text):
        value, at = decoder.raw_decode(text, at)
        found.append(value)
        at = len(text) - len(text[at:].lstrip())
    return found


def run_bash(stack: Stack, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=stack.server.env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )


@dataclass(frozen=True)
class CurlRecipe:
    flow_run: FlowRun
    printed_run_id: str
    final: dict[str, Any]
    result: dict[str, Any]


@pytest.fixture(scope="module")
def curl_recipe(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> CurlRecipe:
    """docs/api.md's curl commands, run as one bash script: find, create, poll, read."""
    assert _latest(stack.store) is None
    script = "".join(doc_blocks("With curl", "bash"))
    assert f'"input_path": "{INPUT_PATH}"' in script
    ran = run_bash(stack, script, tmp_path_factory.mktemp("curl"))
    assert ran.returncode == 0, f"{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}"
    match = re.search(r"^flow run ([0-9a-f-]{36}), run id (\S+)$", ran.stdout, re.MULTILINE)
    assert match, ran.stdout
    final, result = json_documents(ran.stdout[match.end() :])
    with stack.server.client() as client:
        flow_run = client.read_flow_run(UUID(match.group(1)))
    return CurlRecipe(flow_run, match.group(2), final, result)


@pytest.fixture(scope="module")
def trained(stack: Stack, curl_recipe: CurlRecipe) -> FlowRun:
    flow_run = curl_recipe.flow_run
    assert flow_run.state is not None
    assert flow_run.state.type == StateType.COMPLETED, (
        f"{flow_run.state.message}\n{stack.worker.log_tail()}"
    )
    return flow_run


@pytest.fixture
def python_recipe(tmp_path: Path, stack: Stack) -> Path:
    """docs/api.md's Python script, saved as the page says."""
    (script,) = doc_blocks("With Python", "python")
    path = tmp_path / "run_deployment.py"
    path.write_text(script)
    return path


def test_the_curl_recipe_reads_the_result_as_json(
    stack: Stack, curl_recipe: CurlRecipe, trained: FlowRun
) -> None:
    run_id = curl_recipe.printed_run_id
    # The run id the caller computed from the create answer is the run's name and its files'.
    assert trained.name == run_id
    assert curl_recipe.final == {"name": run_id, "state": "Completed", "message": None}
    result = curl_recipe.result
    assert result["run_id"] == run_id
    assert result["input_path"] == INPUT_PATH
    assert result["model_path"] == f"trained_models/{run_id}/model.skops"
    assert result["model_uri"].endswith(f"/trained_models/{run_id}/model.skops")
    metadata = stack.store.read_versioned(f"trained_models/{run_id}/metadata.json")
    assert metadata is not None
    metadata_json = json.loads(metadata.text)
    assert result["model_sha256"] == metadata_json["model_sha256"]
    assert result["metrics"] == metadata_json["metrics"]
    assert result["accuracy"] == metadata_json["metrics"]["accuracy"]
    assert result["promoted"] is True
    assert result["promotion_reason"].startswith("first model")


def test_the_python_recipe_reports_a_failed_run_and_reads_a_result(
    stack: Stack, trained: FlowRun, python_recipe: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing input fails the run with its path in the state message; latest stays."""
    latest_before = _latest(stack.store)
    ran = subprocess.run(
        [sys.executable, str(python_recipe), TRAIN, '{"input_path": "raw/missing.csv"}'],
        cwd=python_recipe.parent,
        env=stack.server.env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert ran.returncode == 1, ran.stderr
    assert ran.stdout == ""
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 2, ran.stderr
    created, final = lines
    match = re.fullmatch(r"flow run ([0-9a-f-]{36}), run id (\S+)", created)
    assert match, created
    assert final.startswith("Failed: "), final
    assert "input 'raw/missing.csv' does not exist" in final
    with stack.server.client() as client:
        failed = client.read_flow_run(UUID(match.group(1)))
    assert failed.name == match.group(2)
    assert failed.state is not None
    assert failed.state.type == StateType.FAILED
    # The state message is what the UI shows on the run: it names the input and the fix.
    message = failed.state.message or ""
    assert "input 'raw/missing.csv' does not exist" in message, message
    assert "give an existing file" in message
    assert _latest(stack.store) == latest_before
    assert not stack.store.list_files(f"prepared_dataframes/{failed.name}")

    # Its reading of a result, on the training run.
    spec = importlib.util.spec_from_file_location("run_deployment", python_recipe)
    assert spec is not None
    assert spec.loader is not None
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    for name, value in stack.server.env().items():
        if name.startswith("PREFECT_API_"):
            monkeypatch.setenv(name, value)
    with recipe.client() as api:
        result = recipe.result_of(api, str(trained.id), "train-result")
        assert recipe.result_of(api, str(failed.id), "train-result") is None
    assert result["run_id"] == trained.name
    assert result["model_sha256"]


def test_each_refusal_answers_its_documented_status(stack: Stack, tmp_path: Path) -> None:
    settings, find = doc_blocks("With curl", "bash")[:2]
    (examples,) = doc_blocks("Status codes and error bodies", "bash")
    requests = re.findall(r"^# (\d{3})\n(.*?)(?=^# |\Z)", examples, re.MULTILINE | re.DOTALL)
    assert [code for code, _ in requests] == ["401", "404", "409", "422"]
    for code, command in requests:
        ran = run_bash(stack, settings + find + command, tmp_path)
        assert ran.returncode == 0, ran.stderr
        body, status = ran.stdout.rstrip("\n").rsplit("\n", 1)
        assert status == code, (command, ran.stdout)
        answer = json.loads(body)
        assert "detail" in answer or "exception_message" in answer, answer
        if code == "409":
            assert "input_path" in answer["detail"]
    with stack.server.client() as client:
        deployment = client.read_deployment_by_name(TRAIN)
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])
            )
        )
    # The refused requests created nothing.
    assert not [r for r in runs if r.parameters.get("input_path") in ("../x", "raw/x.csv")]


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


def test_bad_parameters_are_refused_in_words_before_a_run_exists(stack: Stack) -> None:
    """What `prefect deploy --all` and `python -m deployments.parameters` leave on the server.

    tests/deployments/test_refused_parameters.py pins every rule and message;
    here the deployments are the ones the documented commands made.
    """
    with stack.server.client() as client:
        deployment = client.read_deployment_by_name(TRAIN)
    runs_before = _runs_of(stack, deployment.id)

    result = _run_deployment(stack, TRAIN, "input_path=../x")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1, output
    assert "Validation failed for field 'input_path'" in output
    assert "'../x' does not match \"a path inside the datastore" in output

    with stack.server.client() as client, pytest.raises(PrefectHTTPStatusError) as refused:
        client.create_flow_run_from_deployment(deployment.id, parameters={"inputpath": "x.csv"})
    assert refused.value.response.status_code == 409
    assert (
        "Additional properties are not allowed ('inputpath' was unexpected)"
        in (refused.value.response.json()["detail"])
    )
    assert _runs_of(stack, deployment.id) == runs_before


def _runs_of(stack: Stack, deployment_id: UUID) -> list[UUID]:
    with stack.server.client() as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])
            )
        )
    # The scheduler may add its upcoming runs meanwhile; those are not ours.
    return sorted(
        run.id for run in runs if not (run.idempotency_key or "").startswith("scheduled ")
    )
