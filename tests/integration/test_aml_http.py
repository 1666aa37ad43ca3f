"""AmlCompute through the real `MLClient`, over HTTPS, against a fake workspace and Azurite.

The behaviour tests (tests/flows/compute/test_aml.py) replace `MLClient`;
these keep it, and everything under it: the SDK builds and sends its own
requests, uploads the step's code and the environment's build context to
storage, and streams the job's log from the run history. The seams are the
ones a user could also choose: a credential (static token), a cloud
(`cloud`/`cloud_metadata` naming the fake's URLs) and a CA bundle, given to
`flows.compute.aml.make_ml_client`; plus, in this process only, `*.localhost`
names resolving to 127.0.0.1, because the SDK reaches storage as
`https://{account}.blob.{storage_endpoint}`. The fake workspace
(aml_fake_workspace.py) relays that host to Azurite.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.storage.blob import BlobServiceClient

from flows.compute.aml import AmlCompute, PollSchedule
from flows.compute.aml_client import AmlPreflightError, BlobLocation, make_ml_client
from flows.compute.aml_specs import AmlTarget, dockerfile, environment_version
from flows.compute.base import EnvironmentRef, EnvironmentSpec, ModelToRegister, StepFailedError
from flows.plan import data_prep_step
from flows.settings import Settings
from flows.train import SAMPLE_PATH
from flows.wheel import SOMEMODEL_SOURCE, build_wheel
from tests.conftest import TEST_CACHE_DIR
from tests.integration.aml_fake_workspace import (
    DEFAULT_SCHEDULE,
    FAILED_SCHEDULE,
    TOKEN,
    FakeWorkspace,
    FakeWorkspaceServer,
    make_certificate,
)
from tests.services import ACCOUNT_KEY, ACCOUNT_NAME, Azurite

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"
RESOURCE_GROUP = "rg-somemodel"
WORKSPACE = "ws-somemodel"
DATASTORE = "workspaceblobstore"
COMPUTE = "cpu-cluster"
LOGGER = "test.aml.http"
FAST = PollSchedule(initial=0.2, factor=1.0, maximum=0.2)


class StaticCredential:
    """A TokenCredential that hands out one token and remembers the scopes asked for."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


def _localhost_subdomains(real: Callable[..., Any]) -> Callable[..., Any]:
    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    return getaddrinfo


@pytest.fixture(scope="module")
def server(
    azurite: Azurite, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FakeWorkspaceServer]:
    """The fake workspace on HTTPS, its datastore a fresh container in Azurite."""
    container = azurite.new_container_name("azureml-blobstore")
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(container)
    cert, key = make_certificate(
        tmp_path_factory.mktemp("tls"), ["localhost", f"{ACCOUNT_NAME}.blob.core.localhost"]
    )
    state = FakeWorkspace(
        subscription=SUBSCRIPTION,
        resource_group=RESOURCE_GROUP,
        workspace=WORKSPACE,
        datastore=DATASTORE,
        container=container,
        compute=COMPUTE,
        account_name=ACCOUNT_NAME,
        account_key=ACCOUNT_KEY,
        azurite_port=azurite.port,
    )
    with pytest.MonkeyPatch.context() as patch, FakeWorkspaceServer(state, cert, key) as served:
        # The SDK's storage clients are built inside it, without our options:
        # they trust the fake's certificate through requests' own variable.
        patch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        # MLClient records its cloud in this process-wide variable; put it back.
        patch.delenv("AZUREML_CURRENT_CLOUD", raising=False)
        patch.setattr(socket, "getaddrinfo", _localhost_subdomains(socket.getaddrinfo))
        yield served


@pytest.fixture
def workspace(server: FakeWorkspaceServer) -> FakeWorkspace:
    server.state.requests.clear()
    server.state.unhandled.clear()
    return server.state


def settings(workspace_name: str = WORKSPACE) -> Settings:
    return Settings(
        aml_subscription_id=SUBSCRIPTION,
        aml_resource_group=RESOURCE_GROUP,
        aml_workspace=workspace_name,
        aml_compute_target=COMPUTE,
        aml_datastore=DATASTORE,
    )


def make_compute(
    server: FakeWorkspaceServer,
    credential: StaticCredential | None = None,
    workspace_name: str = WORKSPACE,
    storage: BlobLocation | None = None,
) -> AmlCompute:
    """AmlCompute over the real MLClient that `make_ml_client` builds, aimed at the fake."""
    config = settings(workspace_name)
    client = make_ml_client(
        config,
        credential or StaticCredential(),
        cloud=f"SomemodelFake{server.port}",
        cloud_metadata=server.cloud_metadata(),
        connection_verify=str(server.cert),
    )
    return AmlCompute(
        client,
        AmlTarget.from_settings(config),
        workspace=workspace_name,
        queue_timeout_seconds=60,
        run_timeout_seconds=60,
        logger=logging.getLogger(LOGGER),
        tags={"prefect_flow_run_id": "flow-run-http-1"},
        schedule=FAST,
        retry_attempts=1,
        log_drain_seconds=15,
        storage=storage,
    )


@pytest.fixture(scope="module")
def env_spec() -> EnvironmentSpec:
    wheel = build_wheel(SOMEMODEL_SOURCE, TEST_CACHE_DIR / "wheels")
    config = Settings()
    return EnvironmentSpec("somemodel-env", config.base_image, config.pip_packages, wheel)


@pytest.fixture(scope="module")
def environment(server: FakeWorkspaceServer, env_spec: EnvironmentSpec) -> EnvironmentRef:
    """The environment created once through the SDK (the first test checks how)."""
    return make_compute(server).prepare_environment(env_spec)


def _blobs(azurite: Azurite, container: str, prefix: str = "") -> dict[str, bytes]:
    client = BlobServiceClient.from_connection_string(azurite.connection_string)
    box = client.get_container_client(container)
    return {
        b.name: box.download_blob(b.name).readall() for b in box.list_blobs(name_starts_with=prefix)
    }


def test_preflight_reads_workspace_compute_and_datastore(
    server: FakeWorkspaceServer, workspace: FakeWorkspace
) -> None:
    credential = StaticCredential()
    make_compute(server, credential).preflight()

    ws = workspace.workspace_path
    assert [(r.method, r.path) for r in workspace.requests] == [
        ("GET", ws),
        ("GET", f"{ws}/computes/{COMPUTE}"),
        ("GET", f"{ws}/datastores/{DATASTORE}"),
    ]
    # The token is asked for the custom cloud's resource manager, not Azure's.
    assert set(credential.scopes) == {f"{workspace.base_url}/.default"}
    assert workspace.unhandled == []


def test_wrong_credential_fails_in_preflight(
    server: FakeWorkspaceServer, workspace: FakeWorkspace
) -> None:
    with pytest.raises(AmlPreflightError, match="cannot authenticate to Azure"):
        make_compute(server, StaticCredential("expired-token")).preflight()
    assert len(workspace.requests) == 1


def test_wrong_workspace_fails_in_preflight(
    server: FakeWorkspaceServer, workspace: FakeWorkspace
) -> None:
    with pytest.raises(AmlPreflightError, match="not found: check SOMEMODEL_AML_SUBSCRIPTION_ID"):
        make_compute(server, workspace_name="ws-typo").preflight()


def test_environment_is_put_with_its_build_context_uploaded(
    server: FakeWorkspaceServer,
    workspace: FakeWorkspace,
    azurite: Azurite,
    env_spec: EnvironmentSpec,
) -> None:
    # Its own name: the version the other tests share may exist already.
    env_spec = replace(env_spec, name="somemodel-env-build")
    compute = make_compute(server)
    created = compute.prepare_environment(env_spec)

    assert not created.reused
    version = environment_version(env_spec)
    path = f"{workspace.workspace_path}/environments/{env_spec.name}/versions/{version}"
    (body,) = workspace.bodies("PUT", f"^{path}$")
    build = body["properties"]["build"]
    assert build["dockerfilePath"] == "Dockerfile"
    assert body["properties"]["tags"]["wheel_sha256"] == env_spec.wheel.sha256
    # The definition names the build context by URL: no SAS token, no key.
    assert "?" not in build["contextUri"]
    prefix = f"{workspace.storage_url}/{workspace.container}/"
    assert build["contextUri"].startswith(prefix)
    context = build["contextUri"][len(prefix) :]
    uploaded = _blobs(azurite, workspace.container, context)
    wheel_blob = context + env_spec.wheel.filename
    assert set(uploaded) == {context + "Dockerfile", wheel_blob}
    assert uploaded[context + "Dockerfile"].decode() == dockerfile(env_spec)
    assert hashlib.sha256(uploaded[wheel_blob]).hexdigest() == env_spec.wheel.sha256

    # A second run finds the version and builds (uploads, PUTs) nothing.
    workspace.requests.clear()
    assert compute.prepare_environment(env_spec).reused
    assert workspace.bodies("PUT", "/environments/") == []
    assert workspace.bodies("POST", "listSecrets") == []
    assert workspace.unhandled == []


def test_data_prep_job_is_sent_with_resolved_ids_uploaded_code_and_streamed_log(
    server: FakeWorkspaceServer,
    workspace: FakeWorkspace,
    azurite: Azurite,
    environment: EnvironmentRef,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    spec = data_prep_step("train-2026-11-26-http0001", SAMPLE_PATH, "uri_file", "species")

    result = make_compute(server).run_step(spec, environment)

    assert result.status == "Completed"
    assert result.url.startswith("https://ml.fake/runs/train-2026-11-26-http0001-data-prep")
    ws = workspace.workspace_path
    (job,) = workspace.bodies("PUT", f"^{ws}/jobs/{spec.job_name}$")
    props = job["properties"]
    assert props["jobType"] == "Command"
    assert props["computeId"] == f"{ws}/computes/{COMPUTE}"
    # Both names are resolved to ARM ids by the SDK before they are sent.
    assert props["environmentId"] == (
        f"{ws}/environments/somemodel-env/versions/{environment.version}"
    )
    assert props["experimentName"] == "somemodel"
    assert props["command"] == (
        "python run_data_prep.py --input-dataset-path ${{inputs.input_dataset_path}} "
        "--output-dataframe-path ${{outputs.output_dataframe_path}} --target-col species "
        f"--input-path {SAMPLE_PATH}"
    )
    assert props["inputs"]["input_dataset_path"] == {
        "jobInputType": "uri_file",
        "uri": f"azureml://datastores/{DATASTORE}/paths/{SAMPLE_PATH}",
        "mode": "Download",
    }
    output = props["outputs"]["output_dataframe_path"]
    assert output["jobOutputType"] == "uri_folder"
    assert output["uri"] == (
        f"azureml://datastores/{DATASTORE}/paths/prepared_dataframes/train-2026-11-26-http0001/"
    )
    assert output["mode"] == "Upload"
    assert props["tags"] == {
        "run_id": "train-2026-11-26-http0001",
        "step": "data_prep",
        "prefect_flow_run_id": "flow-run-http-1",
    }

    # The code is a code version whose files the SDK uploaded, as they are on disk.
    code_id = props["codeId"]
    (code,) = workspace.bodies("PUT", f"^{code_id}$")
    code_uri = code["properties"]["codeUri"]
    container = workspace.upload_containers[-1]
    assert code_uri == f"{workspace.storage_url}/{container}/data_prep"
    uploaded = _blobs(azurite, container)
    for name in ("run_data_prep.py", "data_prep.py"):
        assert uploaded[f"data_prep/{name}"] == (spec.code_dir / name).read_bytes()
    assert all(name.startswith("data_prep/") for name in uploaded)

    # The job's log came through the SDK's stream into the logger.
    assert f"[{spec.job_name}] {spec.job_name}: step output" in caplog.messages
    assert workspace.unhandled == []


def test_a_restarted_flow_attaches_to_the_job(
    server: FakeWorkspaceServer, workspace: FakeWorkspace, environment: EnvironmentRef
) -> None:
    spec = data_prep_step("train-2026-11-26-http0002", SAMPLE_PATH, "uri_file", "species")
    make_compute(server).run_step(spec, environment)
    workspace.requests.clear()

    again = make_compute(server).run_step(spec, environment)

    assert again.reused
    assert again.status == "Completed"
    assert workspace.bodies("PUT", "/jobs/") == []
    assert workspace.bodies("POST", "startPendingUpload") == []


def test_failed_job_raises_with_the_error_from_the_run_history(
    server: FakeWorkspaceServer, workspace: FakeWorkspace, environment: EnvironmentRef
) -> None:
    workspace.schedule = FAILED_SCHEDULE
    workspace.failure = {"code": "UserError", "message": "column 'species' not found"}
    spec = data_prep_step("train-2026-11-26-http0003", SAMPLE_PATH, "uri_file", "species")
    try:
        with pytest.raises(StepFailedError) as raised:
            make_compute(server).run_step(spec, environment)
    finally:
        workspace.schedule, workspace.failure = DEFAULT_SCHEDULE, None
    message = str(raised.value)
    assert f"Azure ML job {spec.job_name} ended Failed" in message
    assert "UserError: column 'species' not found" in message
    assert "Studio: https://ml.fake/runs/" in message


def test_polling_keeps_its_back_off_when_the_log_stream_fails(
    server: FakeWorkspaceServer, workspace: FakeWorkspace, environment: EnvironmentRef
) -> None:
    workspace.schedule = (("Running", 3.0), ("Completed", 0.0))
    workspace.run_history_error = 403
    spec = data_prep_step("train-2026-11-26-http0004", SAMPLE_PATH, "uri_file", "species")
    compute = make_compute(server)
    compute.schedule = PollSchedule(initial=1.0, factor=1.0, maximum=1.0)
    try:
        assert compute.run_step(spec, environment).status == "Completed"
    finally:
        workspace.schedule, workspace.run_history_error = DEFAULT_SCHEDULE, None
    polls = [r for r in workspace.requests if r.method == "GET" and r.path.endswith(spec.job_name)]
    # About 3 s of running at one read a second, plus the reads around submission.
    assert len(polls) <= 8, f"{len(polls)} status reads in about 3 s"


def test_the_job_names_the_default_artifact_output_and_logs_come_from_storage(
    server: FakeWorkspaceServer, workspace: FakeWorkspace, environment: EnvironmentRef
) -> None:
    spec = data_prep_step("train-2026-11-26-http0005", SAMPLE_PATH, "uri_file", "species")
    make_compute(server).run_step(spec, environment)
    ws = workspace.workspace_path
    # As a real command job: the SDK lists its logs in workspaceartifactstore,
    # with the account key listSecrets hands out, not from the run history.
    assert workspace.bodies("GET", f"^{ws}/datastores/workspaceartifactstore$")
    assert workspace.bodies("POST", "/datastores/workspaceartifactstore/listSecrets")
    statuses = {
        r.path: r
        for r in workspace.requests
        if r.method == "GET" and r.path == f"{ws}/jobs/{spec.job_name}"
    }
    assert statuses
    assert workspace.unhandled == []


def test_a_second_job_with_the_same_code_reuses_the_uploaded_snapshot(
    server: FakeWorkspaceServer, workspace: FakeWorkspace, environment: EnvironmentRef
) -> None:
    first = data_prep_step("train-2026-11-26-http0006", SAMPLE_PATH, "uri_file", "species")
    second = data_prep_step("train-2026-11-26-http0007", SAMPLE_PATH, "uri_file", "species")
    make_compute(server).run_step(first, environment)
    workspace.requests.clear()
    make_compute(server).run_step(second, environment)
    # Found by its content hash: no upload, no new code version.
    assert workspace.bodies("POST", "startPendingUpload") == []
    assert workspace.bodies("PUT", "/codes/") == []
    (job,) = workspace.bodies("PUT", f"/jobs/{second.job_name}$")
    assert "/codes/" in job["properties"]["codeId"]


def test_a_racing_submission_gets_the_services_400_and_attaches(
    server: FakeWorkspaceServer, workspace: FakeWorkspace, environment: EnvironmentRef
) -> None:
    spec = data_prep_step("train-2026-11-26-http0008", SAMPLE_PATH, "uri_file", "species")
    winner = make_compute(server)
    winner.run_step(spec, environment)
    loser = make_compute(server)
    real_find = loser._find_job
    calls = 0

    def not_yet_submitted(name: str) -> object:
        # The other flow's PUT lands between this flow's check and its own PUT.
        nonlocal calls
        calls += 1
        return None if calls == 1 else real_find(name)

    loser._find_job = not_yet_submitted  # type: ignore[method-assign]
    workspace.requests.clear()
    result = loser.run_step(spec, environment)
    assert result.reused
    assert result.status == "Completed"
    assert len(workspace.bodies("PUT", f"/jobs/{spec.job_name}$")) == 1


def test_cancelling_follows_the_services_async_operation(
    server: FakeWorkspaceServer, workspace: FakeWorkspace, environment: EnvironmentRef
) -> None:
    workspace.schedule = (("Starting", 0.2), ("Queued", 60.0), ("Completed", 0.0))
    spec = data_prep_step("train-2026-11-26-http0009", SAMPLE_PATH, "uri_file", "species")
    compute = make_compute(server)
    compute.queue_timeout_seconds = 1
    try:
        with pytest.raises(StepFailedError, match="SOMEMODEL_AML_QUEUE_TIMEOUT_SECONDS"):
            compute.run_step(spec, environment)
    finally:
        workspace.schedule = DEFAULT_SCHEDULE
    assert workspace.jobs[spec.job_name].status(time.monotonic()) == "Canceled"
    assert workspace.bodies("POST", f"/jobs/{spec.job_name}/cancel$") == [None]
    # The SDK's poller follows the Location of the 202 (in its own thread).
    deadline = time.monotonic() + 10
    while not workspace.bodies("GET", "/mfeOperationResults/") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workspace.bodies("GET", "/mfeOperationResults/")
    assert workspace.unhandled == []


def test_a_failed_job_keeps_its_error_when_its_logs_cannot_be_listed(
    server: FakeWorkspaceServer,
    workspace: FakeWorkspace,
    environment: EnvironmentRef,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    # An identity-based artifact store: the SDK lists the logs with the caller's
    # token, which storage refuses (no data-plane role here).
    workspace.artifact_store_identity_only = True
    workspace.schedule = FAILED_SCHEDULE
    workspace.failure = {"code": "UserError", "message": "column 'species' not found"}
    spec = data_prep_step("train-2026-11-26-http0010", SAMPLE_PATH, "uri_file", "species")
    try:
        with pytest.raises(StepFailedError) as raised:
            make_compute(server).run_step(spec, environment)
    finally:
        workspace.schedule, workspace.failure = DEFAULT_SCHEDULE, None
        workspace.artifact_store_identity_only = False
    assert "ended Failed: UserError: column 'species' not found" in str(raised.value)
    # The storage path is the one that failed, and the wait went on by polling.
    assert f"Cannot stream the logs of Azure ML job {spec.job_name}" in caplog.text


def test_model_versions_are_numbered_by_the_service_and_found_by_tag(
    server: FakeWorkspaceServer, workspace: FakeWorkspace
) -> None:
    compute = make_compute(server)
    model = ModelToRegister(
        "train-2026-11-26-http0011", "trained_models/train-2026-11-26-http0011", "ab" * 32
    )
    first = compute.register_model(model)
    again = make_compute(server).register_model(model)
    assert first.model_id == again.model_id == "azureml:somemodel:1"
    ws = workspace.workspace_path
    (put,) = workspace.bodies("PUT", f"^{ws}/models/somemodel/versions/")
    assert put["properties"]["tags"]["run_id"] == "train-2026-11-26-http0011"
    assert put["properties"]["modelUri"].endswith(
        "/paths/trained_models/train-2026-11-26-http0011/"
    )
    assert workspace.unhandled == []


def test_the_fake_refuses_a_model_version_that_is_not_a_positive_integer(
    server: FakeWorkspaceServer, workspace: FakeWorkspace
) -> None:
    from azure.ai.ml.entities import Model
    from azure.core.exceptions import HttpResponseError

    client = make_compute(server).client
    with pytest.raises(HttpResponseError, match="positive integer") as raised:
        client.models.create_or_update(
            Model(
                name="somemodel-x",
                version="train-2026-11-26",
                path="azureml://datastores/workspaceblobstore/paths/trained_models/x/",
                type="custom_model",
            )
        )
    assert raised.value.status_code == 400


def test_preflight_stops_when_the_datastore_points_at_another_container(
    server: FakeWorkspaceServer, workspace: FakeWorkspace
) -> None:
    workspace.datastore_container = "azureml-blobstore-0000"
    try:
        with pytest.raises(AmlPreflightError) as raised:
            make_compute(
                server, storage=BlobLocation(workspace.account_name, workspace.container)
            ).preflight()
    finally:
        workspace.datastore_container = None
    message = str(raised.value)
    assert "'azureml-blobstore-0000'" in message
    assert repr(workspace.container) in message
    assert {r.method for r in workspace.requests} == {"GET"}
