"""AmlCompute against a fake workspace at the MLClient seam: submit, attach, wait, cancel."""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from azure.ai.ml.entities import PipelineJob
from azure.core.exceptions import HttpResponseError

from flows.compute.aml import AmlCompute, PollSchedule
from flows.compute.aml_client import AmlPreflightError, BlobLocation
from flows.compute.aml_specs import (
    AmlTarget,
    build_command_job,
    environment_id,
    environment_version,
)
from flows.compute.base import (
    EnvironmentRef,
    EnvironmentSpec,
    ModelToRegister,
    StepFailedError,
    StepInput,
    StepOutput,
    StepSpec,
    WheelRef,
)
from flows.settings import Settings
from tests.flows.compute.fake_aml import (
    WORKSPACE,
    FakeClock,
    FakeMLClient,
    Outcome,
    Script,
    http_error,
)

TARGET = AmlTarget("workspaceblobstore", "cpu-cluster", "somemodel", 3600)
ENV = EnvironmentRef("somemodel-env", "0123456789abcdef", "azureml:somemodel-env:0123", False)


@pytest.fixture
def fake(tmp_path: Path) -> FakeMLClient:
    client = FakeMLClient(tmp_path / "uploads")
    yield client
    client.jobs.release()


def make_compute(fake: FakeMLClient, **kwargs: object) -> AmlCompute:
    options: dict = {
        "workspace": WORKSPACE,
        "queue_timeout_seconds": 3600,
        "run_timeout_seconds": 6 * 3600,
        "logger": logging.getLogger("test.aml"),
        "clock": fake.clock,
        "log_drain_seconds": 10,
        "tags": {"prefect_flow_run_id": "flow-run-1"},
    }
    options.update(kwargs)
    return AmlCompute(fake, TARGET, **options)


@pytest.fixture
def spec(tmp_path: Path) -> StepSpec:
    code = tmp_path / "code"
    code.mkdir()
    (code / "step.py").write_text("print('hi')\n")
    return StepSpec(
        step="train",
        run_id="train-2026-11-23-1a2b3c4d",
        code_dir=code,
        script="step.py",
        inputs=(StepInput("data", "prepared_dataframes/train-2026-11-23-1a2b3c4d", "uri_folder"),),
        outputs=(StepOutput("model", "trained_models/train-2026-11-23-1a2b3c4d"),),
    )


def test_completed_job_succeeds_with_its_studio_url_and_logs(
    fake: FakeMLClient, spec: StepSpec, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="test.aml")
    stdout = sys.stdout
    result = make_compute(fake).run_step(spec, ENV)
    assert result.status == "Completed"
    assert result.job_name == "train-2026-11-23-1a2b3c4d-train"
    assert result.url.startswith("https://ml.azure.com/runs/train-2026-11-23-1a2b3c4d-train")
    assert result.outputs == {"model": "trained_models/train-2026-11-23-1a2b3c4d"}
    assert not result.reused
    assert fake.calls["jobs.create_or_update"] == 1
    submitted = fake.jobs.records[result.job_name].job
    assert submitted.tags["prefect_flow_run_id"] == "flow-run-1"
    assert "[train-2026-11-23-1a2b3c4d-train] hello from the job" in caplog.text
    assert sys.stdout is stdout


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (Outcome("Failed", error="KeyError: 'target' column missing"), "column missing"),
        (Outcome("Canceled", logs=()), "ended Canceled"),
        (Outcome("NotResponding", logs=()), "ended NotResponding"),
    ],
    ids=["failed", "canceled", "not-responding"],
)
def test_unsuccessful_job_raises_with_error_and_studio_url(
    fake: FakeMLClient, spec: StepSpec, outcome: Outcome, message: str
) -> None:
    fake.jobs.script(spec.job_name, Script(outcome=outcome))
    with pytest.raises(StepFailedError, match=message) as info:
        make_compute(fake).run_step(spec, ENV)
    assert f"Studio: https://ml.azure.com/runs/{spec.job_name}" in str(info.value)
    assert fake.jobs.cancelled == []


def test_failed_job_message_has_the_log_tail(fake: FakeMLClient, spec: StepSpec) -> None:
    outcome = Outcome("Failed", error="user code failed", logs=("error: no data rows",))
    fake.jobs.script(spec.job_name, Script(outcome=outcome))
    with pytest.raises(StepFailedError, match="UserError: user code failed") as info:
        make_compute(fake).run_step(spec, ENV)
    assert "error: no data rows" in str(info.value)


def test_queue_timeout_cancels_the_job(fake: FakeMLClient, spec: StepSpec) -> None:
    fake.jobs.script(spec.job_name, Script(queued_seconds=10_000))
    with pytest.raises(StepFailedError, match="SOMEMODEL_AML_QUEUE_TIMEOUT_SECONDS"):
        make_compute(fake, queue_timeout_seconds=600).run_step(spec, ENV)
    assert fake.jobs.cancelled == [spec.job_name]
    assert fake.jobs.get(spec.job_name).status == "Canceled"
    assert fake.clock.t < 1200


def test_run_timeout_is_separate_from_queueing(fake: FakeMLClient, spec: StepSpec) -> None:
    fake.jobs.script(spec.job_name, Script(queued_seconds=3000, running_seconds=10_000))
    compute = make_compute(fake, queue_timeout_seconds=3600, run_timeout_seconds=1800)
    with pytest.raises(StepFailedError, match="SOMEMODEL_AML_RUN_TIMEOUT_SECONDS"):
        compute.run_step(spec, ENV)
    assert fake.jobs.cancelled == [spec.job_name]


class InterruptingClock(FakeClock):
    """Raises `error` from the n-th sleep: a signal arriving while the flow waits."""

    def __init__(self, after: int, error: BaseException) -> None:
        super().__init__()
        self.after = after
        self.error: BaseException | None = error

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        super().sleep(seconds, wake)
        if len(self.sleeps) == self.after and self.error is not None:
            error, self.error = self.error, None
            raise error


@pytest.mark.parametrize(
    "error", [KeyboardInterrupt(), SystemExit(143), TimeoutError("flow run timed out")]
)
def test_interrupted_wait_cancels_the_job_and_reraises(
    tmp_path: Path, spec: StepSpec, error: BaseException
) -> None:
    clock = InterruptingClock(after=4, error=error)
    fake = FakeMLClient(tmp_path / "uploads", clock=clock)
    fake.jobs.script(spec.job_name, Script(queued_seconds=60, running_seconds=7200))
    with pytest.raises(type(error)):
        make_compute(fake, clock=clock).run_step(spec, ENV)
    assert fake.jobs.cancelled == [spec.job_name]
    assert fake.jobs.get(spec.job_name).status == "Canceled"


def test_prefect_termination_signal_cancels_the_job(tmp_path: Path, spec: StepSpec) -> None:
    from prefect.exceptions import TerminationSignal

    clock = InterruptingClock(after=3, error=TerminationSignal(15))
    fake = FakeMLClient(tmp_path / "uploads", clock=clock)
    with pytest.raises(TerminationSignal):
        make_compute(fake, clock=clock).run_step(spec, ENV)
    assert fake.jobs.cancelled == [spec.job_name]


def test_restarted_flow_attaches_to_the_running_job(fake: FakeMLClient, spec: StepSpec) -> None:
    job = build_command_job(spec, environment_id(ENV.name, ENV.version), TARGET, {})
    fake.jobs.create_or_update(job)
    fake.clock.t += 60
    result = make_compute(fake).run_step(spec, ENV)
    assert result.status == "Completed"
    assert result.reused
    assert fake.calls["jobs.create_or_update"] == 1


def test_finished_job_is_reused_without_waiting(fake: FakeMLClient, spec: StepSpec) -> None:
    first = make_compute(fake).run_step(spec, ENV)
    gets = fake.calls["jobs.get"]
    again = make_compute(fake).run_step(spec, ENV)
    assert again.reused
    assert again.url == first.url
    assert fake.calls["jobs.create_or_update"] == 1
    assert fake.calls["jobs.get"] == gets + 1
    assert fake.calls["jobs.stream"] == 1


def test_an_hour_long_job_makes_few_status_calls(fake: FakeMLClient, spec: StepSpec) -> None:
    fake.jobs.script(spec.job_name, Script(queued_seconds=300, running_seconds=3600))
    make_compute(fake).run_step(spec, ENV)
    assert fake.clock.t >= 3900
    assert fake.calls["jobs.get"] < 45
    assert max(fake.clock.sleeps) == PollSchedule().maximum


def test_transient_errors_are_retried(fake: FakeMLClient, spec: StepSpec) -> None:
    fake.service.fail("jobs.create_or_update", http_error(429), http_error(503))
    fake.service.fail("jobs.get", http_error(503))  # the attach check
    result = make_compute(fake).run_step(spec, ENV)
    assert result.status == "Completed"
    assert fake.calls["jobs.create_or_update"] == 3
    assert len(fake.jobs.records) == 1


def test_transient_error_while_polling_does_not_fail_the_step(
    fake: FakeMLClient, spec: StepSpec
) -> None:
    compute = make_compute(fake)
    original = fake.jobs.create_or_update

    def create_then_throttle(job: object, **kwargs: object) -> object:
        created = original(job)
        fake.service.fail("jobs.get", http_error(429), http_error(502))
        return created

    fake.jobs.create_or_update = create_then_throttle  # type: ignore[method-assign]
    assert compute.run_step(spec, ENV).status == "Completed"


@pytest.mark.parametrize("status", [400, 403, 404])
def test_user_errors_are_not_retried(fake: FakeMLClient, spec: StepSpec, status: int) -> None:
    fake.service.fail("jobs.create_or_update", http_error(status, f"user error {status}"))
    with pytest.raises(HttpResponseError, match=f"user error {status}"):
        make_compute(fake).run_step(spec, ENV)
    assert fake.calls["jobs.create_or_update"] == 1


def test_persistent_throttling_gives_up(fake: FakeMLClient, spec: StepSpec) -> None:
    fake.service.fail("jobs.create_or_update", *[http_error(429) for _ in range(10)])
    with pytest.raises(HttpResponseError):
        make_compute(fake, retry_attempts=4).run_step(spec, ENV)
    assert fake.calls["jobs.create_or_update"] == 4


# --- environment -----------------------------------------------------------------------


@pytest.fixture
def env_spec(tmp_path: Path) -> EnvironmentSpec:
    wheel = tmp_path / "somemodel-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK fake wheel")
    ref = WheelRef(wheel, "ab" * 32, f"wheels/{'ab' * 32}/{wheel.name}")
    return EnvironmentSpec("somemodel-env", "mcr.microsoft.com/img:1", ("pandas==3.1.1",), ref)


def test_environment_is_created_once_then_reused(
    fake: FakeMLClient, env_spec: EnvironmentSpec
) -> None:
    first = make_compute(fake).prepare_environment(env_spec)
    second = make_compute(fake).prepare_environment(env_spec)
    assert not first.reused
    assert second.reused
    version = environment_version(env_spec)
    assert first.id == second.id == f"somemodel-env@{version}"
    assert fake.calls["environments.create_or_update"] == 1
    uploaded = fake.environments.uploaded[("somemodel-env", version)]
    assert set(uploaded) == {"Dockerfile", "somemodel-0.1.0-py3-none-any.whl"}
    assert uploaded["somemodel-0.1.0-py3-none-any.whl"] == b"PK fake wheel"
    assert b"FROM mcr.microsoft.com/img:1" in uploaded["Dockerfile"]


def test_environment_lookup_user_error_is_not_swallowed(
    fake: FakeMLClient, env_spec: EnvironmentSpec
) -> None:
    fake.service.fail("environments.get", http_error(403, "forbidden"))
    with pytest.raises(HttpResponseError, match="forbidden"):
        make_compute(fake).prepare_environment(env_spec)
    assert fake.calls["environments.create_or_update"] == 0


# --- preflight -------------------------------------------------------------------------


def test_preflight_passes_on_a_good_workspace(fake: FakeMLClient) -> None:
    make_compute(fake).preflight()
    assert fake.calls["workspaces.get"] == 1


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("workspace", "SOMEMODEL_AML_WORKSPACE"),
        ("credential", "SOMEMODEL_AML_CLIENT_SECRET"),
        ("forbidden", "AzureML Data Scientist"),
        ("compute", "SOMEMODEL_AML_COMPUTE_TARGET"),
        ("datastore", "SOMEMODEL_AML_DATASTORE"),
    ],
)
def test_preflight_says_what_to_fix(fake: FakeMLClient, breakage: str, message: str) -> None:
    if breakage == "workspace":
        fake.workspaces.names = {"another-workspace"}
    elif breakage == "credential":
        fake.workspaces.auth_error = "DefaultAzureCredential failed to retrieve a token"
    elif breakage == "forbidden":
        fake.service.fail("workspaces.get", http_error(403, "AuthorizationFailed"))
    elif breakage == "compute":
        fake.compute.names = set()
    else:
        fake.datastores.names = set()
    with pytest.raises(AmlPreflightError, match=message):
        make_compute(fake).preflight()


def test_from_settings_runs_preflight_and_tags_nothing_outside_prefect(
    fake: FakeMLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.compute.aml as aml

    made: list[Settings] = []

    def make_client(settings: Settings) -> FakeMLClient:
        made.append(settings)
        return fake

    monkeypatch.setattr(aml, "make_ml_client", make_client)
    fake.datastores.account = "acct"
    settings = Settings(
        compute="aml",
        datastore="blob",
        blob_account_url="https://acct.blob.core.windows.net",
        aml_subscription_id="sub",
        aml_resource_group="rg",
        aml_workspace="wrong-workspace",
    )
    with pytest.raises(AmlPreflightError, match="'wrong-workspace' not found"):
        AmlCompute.from_settings(settings)
    assert made == [settings]
    compute = AmlCompute.from_settings(settings.model_copy(update={"aml_workspace": WORKSPACE}))
    assert compute.tags == {}


@pytest.mark.parametrize(
    ("account", "container"),
    [("devstoreaccount1", "azureml-blobstore-5f0e"), ("otheraccount", "somemodel")],
    ids=["other-container", "other-account"],
)
def test_preflight_stops_when_the_datastore_is_not_the_blob_container(
    fake: FakeMLClient, account: str, container: str
) -> None:
    fake.datastores.account, fake.datastores.container = account, container
    compute = make_compute(fake, storage=BlobLocation("devstoreaccount1", "somemodel"))
    with pytest.raises(AmlPreflightError) as info:
        compute.preflight()
    message = str(info.value)
    # Both sides named, and what to change.
    assert f"container {container!r} in storage account {account!r}" in message
    assert "container 'somemodel' in account 'devstoreaccount1'" in message
    assert "SOMEMODEL_BLOB_CONTAINER" in message
    assert "SOMEMODEL_AML_DATASTORE" in message
    # Nothing was created or uploaded.
    assert fake.calls["environments.create_or_update"] == 0
    assert fake.calls["jobs.create_or_update"] == 0


def test_preflight_accepts_the_datastore_of_the_blob_container(fake: FakeMLClient) -> None:
    # Account names are case-insensitive in Azure.
    make_compute(fake, storage=BlobLocation("DevStoreAccount1", "somemodel")).preflight()


def test_from_settings_compares_the_datastore_with_the_blob_settings(
    fake: FakeMLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.compute.aml as aml

    monkeypatch.setattr(aml, "make_ml_client", lambda settings: fake)
    settings = Settings(
        compute="aml",
        datastore="blob",
        blob_account_url="https://acct.blob.core.windows.net",
        blob_container="my-container",
        aml_subscription_id="sub",
        aml_resource_group="rg",
        aml_workspace=WORKSPACE,
    )
    with pytest.raises(AmlPreflightError, match="container 'my-container' in account 'acct'"):
        AmlCompute.from_settings(settings)


# --- model registry ----------------------------------------------------------------------


def _to_register(run_id: str, sha: str = "ab" * 32) -> ModelToRegister:
    metrics = {"accuracy": 0.9666666, "per_class": {"setosa": {"f1": 1.0}}}
    return ModelToRegister(run_id, f"trained_models/{run_id}", sha, metrics)


def test_register_model_lets_the_service_number_versions_and_tags_the_run(
    fake: FakeMLClient,
) -> None:
    compute = make_compute(fake)
    run_id = "train-2026-11-23-1a2b3c4d"
    registration = compute.register_model(_to_register(run_id))
    # The run id is no model version: the service takes only positive integers.
    assert registration.model_id == "azureml:somemodel:1"
    model = fake.models.versions[("somemodel", "1")]
    assert model.path == f"azureml://datastores/workspaceblobstore/paths/trained_models/{run_id}/"
    assert model.tags["run_id"] == run_id
    assert model.tags["model_sha256"] == "ab" * 32
    assert model.tags["accuracy"] == "0.966667"
    assert model.tags["per_class.setosa.f1"] == "1"
    later = compute.register_model(_to_register("train-2026-11-30-5e6f7a8b", "cd" * 32))
    assert later.model_id == "azureml:somemodel:2"


def test_register_model_is_idempotent_per_run(fake: FakeMLClient) -> None:
    compute = make_compute(fake)
    first = compute.register_model(_to_register("train-2026-11-23-1a2b3c4d"))
    again = make_compute(fake).register_model(_to_register("train-2026-11-23-1a2b3c4d"))
    assert again.model_id == first.model_id
    assert "already registered" in again.message
    assert fake.calls["models.create_or_update"] == 1


def test_register_model_retry_after_a_lost_answer_adds_no_version(fake: FakeMLClient) -> None:
    original = fake.models.create_or_update

    def create_then_lose_the_answer(model: object) -> object:
        original(model)  # type: ignore[arg-type]
        fake.models.create_or_update = original  # type: ignore[method-assign]
        raise http_error(503, "gateway timeout after the write")

    fake.models.create_or_update = create_then_lose_the_answer  # type: ignore[method-assign]
    registration = make_compute(fake).register_model(_to_register("train-2026-11-23-1a2b3c4d"))
    assert registration.model_id == "azureml:somemodel:1"
    assert list(fake.models.versions) == [("somemodel", "1")]


def test_fake_workspace_rejects_a_model_version_that_is_not_a_positive_integer(
    fake: FakeMLClient,
) -> None:
    from azure.ai.ml.entities import Model

    with pytest.raises(HttpResponseError, match="ModelVersionOutOfRange"):
        fake.models.create_or_update(Model(name="somemodel", version="train-2026-11-23"))


# --- racing submissions ---------------------------------------------------------------------


def test_a_racing_submission_with_the_same_run_id_attaches_to_the_winner(
    fake: FakeMLClient, spec: StepSpec
) -> None:
    # Both flows saw no job under the name; the other one's PUT landed first, so
    # ours gets the service's 400 "A job with this name already exists".
    winner = build_command_job(spec, environment_id(ENV.name, ENV.version), TARGET, {})
    original = fake.jobs.create_or_update

    def lose_the_race(job: object, **kwargs: object) -> object:
        fake.jobs.create_or_update = original  # type: ignore[method-assign]
        original(winner)
        return original(job)  # type: ignore[arg-type]

    fake.jobs.create_or_update = lose_the_race  # type: ignore[method-assign]
    result = make_compute(fake).run_step(spec, ENV)
    assert result.status == "Completed"
    assert result.reused
    assert list(fake.jobs.records) == [spec.job_name]
    assert fake.jobs.records[spec.job_name].job is winner


def test_a_duplicate_name_400_without_a_job_is_a_user_error(
    fake: FakeMLClient, spec: StepSpec
) -> None:
    fake.service.fail("jobs.create_or_update", http_error(400, "invalid command"))
    with pytest.raises(HttpResponseError, match="invalid command"):
        make_compute(fake).run_step(spec, ENV)


# --- log stream failures --------------------------------------------------------------------


def test_a_failed_log_stream_leaves_the_job_its_own_error(
    fake: FakeMLClient, spec: StepSpec, caplog: pytest.LogCaptureFixture
) -> None:
    # Real command jobs list their logs from workspaceartifactstore; an identity
    # without a data-plane role there gets a 403 from storage, not the job's error.
    storage = http_error(403, "AuthorizationPermissionMismatch: This request is not authorized")
    outcome = Outcome("Failed", error="KeyError: 'species'", logs=())
    fake.jobs.script(
        spec.job_name,
        Script(queued_seconds=60, running_seconds=600, outcome=outcome, stream_error=storage),
    )
    caplog.set_level(logging.WARNING, logger="test.aml")
    with pytest.raises(StepFailedError) as info:
        make_compute(fake).run_step(spec, ENV)
    message = str(info.value)
    assert "ended Failed: UserError: KeyError: 'species'" in message
    assert "AuthorizationPermissionMismatch" not in message
    assert "waiting by polling its status" in caplog.text
    # Polling went on with its back-off: no busy loop after the stream ended.
    assert fake.calls["jobs.get"] < 20


def test_a_failed_log_stream_does_not_fail_a_job_that_completes(
    fake: FakeMLClient, spec: StepSpec
) -> None:
    fake.jobs.script(spec.job_name, Script(stream_error=http_error(403, "no storage role")))
    assert make_compute(fake).run_step(spec, ENV).status == "Completed"


# --- pipeline jobs: queue and run timeouts follow the child job ------------------------------


def _pipeline(spec: StepSpec) -> PipelineJob:
    node = build_command_job(spec, environment_id(ENV.name, ENV.version), TARGET, {})
    return PipelineJob(name=spec.job_name, jobs={spec.step: node}, compute=TARGET.compute)


def test_queue_timeout_fires_while_a_pipeline_child_waits_for_a_node(
    fake: FakeMLClient, spec: StepSpec
) -> None:
    # The parent is Running within seconds; its child never gets a node.
    fake.jobs.script(spec.job_name, Script(queued_seconds=5, child_queued_seconds=100_000))
    with pytest.raises(StepFailedError, match="SOMEMODEL_AML_QUEUE_TIMEOUT_SECONDS"):
        make_compute(fake, queue_timeout_seconds=600).submit_job(
            _pipeline(spec), step=spec.step, outputs={}
        )
    assert fake.jobs.cancelled == [spec.job_name]
    assert fake.clock.t < 1200


def test_run_timeout_of_a_pipeline_starts_when_its_child_runs(
    fake: FakeMLClient, spec: StepSpec
) -> None:
    fake.jobs.script(
        spec.job_name,
        Script(queued_seconds=5, child_queued_seconds=3000, running_seconds=100_000),
    )
    compute = make_compute(fake, queue_timeout_seconds=3600, run_timeout_seconds=1800)
    with pytest.raises(StepFailedError, match="SOMEMODEL_AML_RUN_TIMEOUT_SECONDS"):
        compute.submit_job(_pipeline(spec), step=spec.step, outputs={})
    # Not 1800 s after the parent started: 1800 s after the child did.
    assert fake.clock.t > 3000 + 1800


def test_a_pipeline_whose_children_cannot_be_listed_runs_on(
    fake: FakeMLClient, spec: StepSpec
) -> None:
    fake.jobs.script(spec.job_name, Script(queued_seconds=5, running_seconds=600))
    fake.service.fail("jobs.list", *[http_error(403, "no run history access")] * 50)
    result = make_compute(fake).submit_job(_pipeline(spec), step=spec.step, outputs={})
    assert result.status == "Completed"
    assert fake.jobs.cancelled == []


def _shards(spec: StepSpec, count: int) -> list[StepSpec]:
    return [
        replace(spec, step=f"score_{k}", outputs=(StepOutput("p", f"parts/shard-{k}"),))
        for k in range(count)
    ]


def test_fan_out_submits_every_job_and_waits_for_them_together(
    fake: FakeMLClient, spec: StepSpec
) -> None:
    specs = _shards(spec, 3)
    results = make_compute(fake).run_steps(specs, ENV)
    assert [r.job_name for r in results] == [f"{spec.run_id}-score-{k}" for k in range(3)]
    assert [r.status for r in results] == ["Completed"] * 3
    assert [r.outputs for r in results] == [{"p": f"parts/shard-{k}"} for k in range(3)]
    assert fake.calls["jobs.create_or_update"] == 3
    for k in range(3):
        job = fake.jobs.records[f"{spec.run_id}-score-{k}"].job
        assert (
            job.outputs["p"].path
            == f"azureml://datastores/workspaceblobstore/paths/parts/shard-{k}/"
        )
    # A restarted flow attaches to all of them by name: nothing is submitted twice.
    again = make_compute(fake).run_steps(specs, ENV)
    assert all(r.reused for r in again)
    assert fake.calls["jobs.create_or_update"] == 3


def test_fan_out_failure_cancels_the_other_jobs(fake: FakeMLClient, spec: StepSpec) -> None:
    specs = _shards(spec, 3)
    for other in (specs[0], specs[2]):
        fake.jobs.script(other.job_name, Script(queued_seconds=1, running_seconds=10**12))
    fake.jobs.script(
        specs[1].job_name,
        Script(queued_seconds=1, running_seconds=5, outcome=Outcome("Failed", error="bad CSV")),
    )
    compute = make_compute(fake, run_timeout_seconds=10**13, queue_timeout_seconds=10**13)
    with pytest.raises(StepFailedError, match=rf"{specs[1].job_name} ended Failed: .*bad CSV"):
        compute.run_steps(specs, ENV)
    # A job whose thread had not submitted it when the failure came is never
    # submitted (run_steps' docstring); every other one is cancelled.
    others = [s.job_name for s in (specs[0], specs[2]) if s.job_name in fake.jobs.records]
    assert others, "no other job was submitted: the test proved nothing"
    assert sorted(set(fake.jobs.cancelled)) == others
    assert all(fake.jobs._status(fake.jobs.records[name]) == "Canceled" for name in others)


def test_a_fan_out_job_submitted_after_the_failure_cancels_itself(
    fake: FakeMLClient, spec: StepSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shard 1's thread submits its job only after the fan-out tried, in vain, to cancel
    it (it did not exist yet): the job must not run on with no one waiting for it."""
    specs = _shards(spec, 2)
    failing = Script(queued_seconds=1, running_seconds=5, outcome=Outcome("Failed", error="bad"))
    fake.jobs.script(specs[0].job_name, failing)
    fake.jobs.script(specs[1].job_name, Script(queued_seconds=1, running_seconds=10**12))
    tried_to_cancel = threading.Event()
    create = fake.jobs.create_or_update

    def late_create(job, **kwargs):  # type: ignore[no-untyped-def]
        if job.name == specs[1].job_name:
            assert tried_to_cancel.wait(60), "the fan-out never tried to cancel shard 1"
        return create(job, **kwargs)

    monkeypatch.setattr(fake.jobs, "create_or_update", late_create)
    compute = make_compute(fake, run_timeout_seconds=10**13, queue_timeout_seconds=10**13)
    cancel = compute._cancel

    def cancel_then_release(name: str, reason: str) -> None:
        cancel(name, reason)
        if name == specs[1].job_name:
            tried_to_cancel.set()

    monkeypatch.setattr(compute, "_cancel", cancel_then_release)
    with pytest.raises(StepFailedError, match=rf"{specs[0].job_name} ended Failed: .*bad"):
        compute.run_steps(specs, ENV)
    assert fake.jobs.cancelled == [specs[1].job_name]
    assert fake.jobs._status(fake.jobs.records[specs[1].job_name]) == "Canceled"


def test_fan_out_interrupted_while_waiting_cancels_every_job(
    fake: FakeMLClient, spec: StepSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.compute.aml as aml_module

    specs = _shards(spec, 2)
    for one in specs:
        fake.jobs.script(one.job_name, Script(queued_seconds=1, running_seconds=10**12))
    real_wait = aml_module.wait
    calls = []

    def cancelled_run(futures, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs)
        if len(calls) == 1:  # the Prefect run is cancelled while the flow waits
            while len(fake.jobs.records) < len(specs):
                threading.Event().wait(0.01)
            raise KeyboardInterrupt
        return real_wait(futures, **kwargs)

    monkeypatch.setattr(aml_module, "wait", cancelled_run)
    compute = make_compute(fake, run_timeout_seconds=10**13, queue_timeout_seconds=10**13)
    with pytest.raises(KeyboardInterrupt):
        compute.run_steps(specs, ENV)
    assert sorted(fake.jobs.cancelled) == sorted(s.job_name for s in specs)
