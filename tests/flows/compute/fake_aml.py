"""A fake Azure ML workspace at the `MLClient` seam, keeping state like the service.

`FakeMLClient` has the operations `AmlCompute` uses (`jobs`, `environments`,
`models`, `workspaces`, `compute`, `datastores`) with the SDK's signatures and
exceptions. Jobs follow a timeline on a `FakeClock` (queued, running, then a
final state), so a test runs an hour-long job in no time; `get` returns a real
SDK `Job` made by the SDK's own REST deserialisation, as the real `get` does;
`stream` blocks until the job ends, writes the job's log lines to `sys.stdout`
and raises the SDK's `JobException` for a failed job, as the real one does.
Faults (429, 503, 400, 403...) are injected per operation.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from azure.ai.ml._restclient.arm_ml_service.models import JobService as RestJobService
from azure.ai.ml._restclient.runhistory.models import RunDetails
from azure.ai.ml.entities import AzureBlobDatastore, Environment, Job, Model, PipelineJob
from azure.ai.ml.exceptions import ErrorCategory, ErrorTarget, JobException
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)

from flows.compute.aml_client import Clock

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "rg-test"
WORKSPACE = "ws-test"


def http_error(status: int, message: str = "") -> HttpResponseError:
    error = HttpResponseError(message=message or f"HTTP {status} from the fake workspace")
    error.status_code = status
    return error


class FakeClock(Clock):
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


@dataclass
class Outcome:
    """What a job does once it runs: its final state, error and log lines."""

    status: str = "Completed"
    error: str | None = None
    logs: tuple[str, ...] = ("hello from the job",)


@dataclass
class Script:
    """A job's timeline in seconds of fake time, and what running it produces."""

    queued_seconds: float = 30.0
    running_seconds: float = 120.0
    outcome: Outcome | Callable[[Job], Outcome] = field(default_factory=Outcome)
    cancel_seconds: float = 20.0
    # A pipeline job is Running once scheduled; its child job then waits this
    # long for a node before it runs (for `running_seconds`).
    child_queued_seconds: float = 0.0
    # `jobs.stream` raises this at once, as it does when the job's logs cannot
    # be listed from storage (an identity without a storage data-plane role).
    stream_error: BaseException | None = None


@dataclass
class _Record:
    job: Job
    script: Script
    created_at: float
    cancel_requested_at: float | None = None
    result: Outcome | None = None
    ended: threading.Event = field(default_factory=threading.Event)


class FakeService:
    """State shared by the operations: the clock, the call log, injected faults."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: Counter[str] = Counter()
        self.faults: dict[str, list[BaseException]] = {}

    def fail(self, operation: str, *errors: BaseException) -> None:
        """The next calls of `operation` (e.g. "jobs.get") raise `errors`, in order."""
        self.faults.setdefault(operation, []).extend(errors)

    def enter(self, operation: str) -> None:
        self.calls[operation] += 1
        pending = self.faults.get(operation)
        if pending:
            raise pending.pop(0)


class FakeJobs:
    def __init__(self, service: FakeService) -> None:
        self.service = service
        self.records: dict[str, _Record] = {}
        self.scripts: dict[str, Script] = {}
        self.default_script = Script()
        self.cancelled: list[str] = []
        # The poller and the log stream both read a job's state, as on the service.
        self._lock = threading.RLock()

    def script(self, name: str, script: Script) -> None:
        self.scripts[name] = script

    def _status(self, record: _Record) -> str:
        with self._lock:
            return self._advance(record)

    def _advance(self, record: _Record) -> str:
        now = self.service.clock.now()
        if record.result is not None:
            return record.result.status
        if record.cancel_requested_at is not None:
            if now - record.cancel_requested_at < record.script.cancel_seconds:
                return "CancelRequested"
            record.result = Outcome("Canceled", logs=())
        else:
            elapsed = now - record.created_at
            if elapsed < record.script.queued_seconds:
                return "Queued"
            running = record.script.running_seconds + record.script.child_queued_seconds
            if elapsed < record.script.queued_seconds + running:
                return "Running"
            outcome = record.script.outcome
            to_job = getattr(record.job, "_to_job", None)
            job = to_job() if to_job else record.job
            record.result = outcome(job) if callable(outcome) else outcome
        record.ended.set()
        return record.result.status

    def _entity(self, record: _Record) -> Job:
        job = record.job
        to_job = getattr(job, "_to_job", None)
        rest = (to_job() if to_job else job)._to_rest_object()
        rest.properties.status = self._status(record)
        url = (
            f"https://ml.azure.com/runs/{job.name}?wsid=/subscriptions/{SUBSCRIPTION}"
            f"/resourcegroups/{RESOURCE_GROUP}/workspaces/{WORKSPACE}"
        )
        rest.properties.services = {"Studio": RestJobService(endpoint=url)}
        rest.id = (
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
            f"Microsoft.MachineLearningServices/workspaces/{WORKSPACE}/jobs/{job.name}"
        )
        return Job._from_rest_object(rest)

    def _record(self, name: str) -> _Record:
        if name not in self.records:
            raise ResourceNotFoundError(f"Job {name} not found in workspace {WORKSPACE}")
        return self.records[name]

    def get(self, name: str) -> Job:
        self.service.enter("jobs.get")
        return self._entity(self._record(name))

    def list(self, parent_job_name: str | None = None, **kwargs: Any) -> list[Any]:
        """The child jobs of a pipeline job: one, waiting `child_queued_seconds` for a node."""
        self.service.enter("jobs.list")
        record = self._record(parent_job_name or "")
        parent = self._status(record)
        if not isinstance(record.job, PipelineJob) or parent in ("Queued", "NotStarted"):
            return []
        elapsed = self.service.clock.now() - record.created_at - record.script.queued_seconds
        if parent != "Running":
            status = parent
        elif elapsed < record.script.child_queued_seconds:
            status = "Queued"
        else:
            status = "Running"
        return [SimpleNamespace(name=f"{parent_job_name}-child", status=status)]

    @property
    def _runs_operations(self) -> FakeRuns:
        return FakeRuns(self)

    def create_or_update(self, job: Job, **kwargs: Any) -> Job:
        self.service.enter("jobs.create_or_update")
        name = job.name or ""
        if name in self.records:
            # What the service answers (400 UserError, not 409 Conflict).
            raise http_error(400, f"(UserError) A job with this name already exists: {name}")
        script = self.scripts.get(name, self.default_script)
        self.records[name] = _Record(job, script, created_at=self.service.clock.now())
        return self._entity(self.records[name])

    def begin_cancel(self, name: str, **kwargs: Any) -> None:
        self.service.enter("jobs.begin_cancel")
        record = self._record(name)
        self.cancelled.append(name)
        if self._status(record) not in ("Completed", "Failed", "Canceled", "NotResponding"):
            record.cancel_requested_at = self.service.clock.now()

    def stream(self, name: str) -> None:
        self.service.enter("jobs.stream")
        record = self._record(name)
        if record.script.stream_error is not None:
            raise record.script.stream_error
        # Like the SDK, it watches the job until it ends (in real seconds; on a
        # FakeClock only the poller moves time on).
        deadline = time.monotonic() + 60
        while not record.ended.wait(0.05):
            self._status(record)
            if time.monotonic() > deadline:
                return
        result = record.result or Outcome()
        sys.stdout.write(f"RunId: {name}\nWeb View: https://ml.azure.com/runs/{name}\n")
        for line in result.logs:
            sys.stdout.write(line + "\n")
        if result.status == "Failed":
            error = {"error": {"code": "UserError", "message": result.error or "failed"}}
            raise JobException(
                message=f"Exception : \n {json.dumps(error, indent=4)} ",
                target=ErrorTarget.JOB,
                no_personal_data_message="Exception raised on failed job.",
                error_category=ErrorCategory.SYSTEM_ERROR,
            )

    def release(self) -> None:
        for record in self.records.values():
            record.ended.set()


class FakeRuns:
    """The run history the SDK's `jobs._runs_operations` reads: a job's status and error."""

    def __init__(self, jobs: FakeJobs) -> None:
        self.jobs = jobs

    def get_run_details(self, name: str) -> RunDetails:
        self.jobs.service.enter("runs.get_run_details")
        record = self.jobs._record(name)
        status = self.jobs._status(record)
        body: dict[str, Any] = {"runId": name, "status": status}
        result = record.result
        if result is not None and result.status == "Failed":
            body["error"] = {"error": {"code": "UserError", "message": result.error or "failed"}}
        return RunDetails(body)


class FakeEnvironments:
    def __init__(self, service: FakeService, upload_dir: Path) -> None:
        self.service = service
        self.upload_dir = upload_dir
        self.versions: dict[tuple[str, str], Environment] = {}
        self.uploaded: dict[tuple[str, str], dict[str, bytes]] = {}

    def get(self, name: str, version: str | None = None, **kwargs: Any) -> Environment:
        self.service.enter("environments.get")
        key = (name, version or "")
        if key not in self.versions:
            raise ResourceNotFoundError(f"Environment {name}:{version} not found")
        return self.versions[key]

    def create_or_update(self, environment: Environment) -> Environment:
        self.service.enter("environments.create_or_update")
        key = (environment.name or "", environment.version or "")
        # Like the SDK: the build context folder is uploaded when the version is created.
        context = Path(str(environment.build.path)) if environment.build else None
        files = {}
        if context is not None:
            files = {p.name: p.read_bytes() for p in sorted(context.iterdir()) if p.is_file()}
            shutil.copytree(context, self.upload_dir / f"{key[0]}-{key[1]}", dirs_exist_ok=True)
        self.uploaded[key] = files
        self.versions[key] = environment
        return environment


class FakeModels:
    """Model versions by the service's rules: positive integers, assigned when not given."""

    def __init__(self, service: FakeService) -> None:
        self.service = service
        self.versions: dict[tuple[str, str], Model] = {}

    def get(self, name: str, version: str | None = None, **kwargs: Any) -> Model:
        self.service.enter("models.get")
        key = (name, version or "")
        if key not in self.versions:
            raise ResourceNotFoundError(f"Model {name}:{version} not found")
        return self.versions[key]

    def list(self, name: str | None = None, **kwargs: Any) -> list[Model]:
        self.service.enter("models.list")
        return [m for (n, _), m in sorted(self.versions.items()) if name in (None, n)]

    def create_or_update(self, model: Model) -> Model:
        self.service.enter("models.create_or_update")
        name = model.name or ""
        version = model.version
        if version is None:
            # The SDK reads the model container's nextVersion ("1" when there is none).
            taken = [int(v) for (n, v) in self.versions if n == name]
            version = str(max(taken, default=0) + 1)
        elif not (version.isdigit() and int(version) > 0):
            raise http_error(
                400,
                "(UserError) Model version must be a positive integer.\n"
                "Code: ModelVersionOutOfRange",
            )
        stored = copy.copy(model)
        stored.version = version
        self.versions[(name, version)] = stored
        return stored


class _Named:
    """Read-only operations on named resources (workspaces, compute, datastores)."""

    def __init__(self, service: FakeService, kind: str, names: set[str]) -> None:
        self.service = service
        self.kind = kind
        self.names = names
        self.auth_error: str | None = None

    def get(self, name: str, **kwargs: Any) -> dict[str, str]:
        self.service.enter(f"{self.kind}.get")
        if self.auth_error:
            raise ClientAuthenticationError(self.auth_error)
        if name not in self.names:
            raise ResourceNotFoundError(f"{self.kind} {name} not found")
        return {"name": name}


class FakeDatastores(_Named):
    """Datastores as the SDK returns them: blob datastores naming their account and container."""

    def __init__(self, service: FakeService, name: str, account: str, container: str) -> None:
        super().__init__(service, "datastores", {name})
        self.account = account
        self.container = container

    def get(self, name: str, **kwargs: Any) -> Any:
        super().get(name)
        return AzureBlobDatastore(
            name=name, account_name=self.account, container_name=self.container
        )


class FakeMLClient:
    def __init__(
        self,
        upload_dir: Path,
        clock: FakeClock | None = None,
        workspace: str = WORKSPACE,
        compute: str = "cpu-cluster",
        datastore: str = "workspaceblobstore",
        datastore_account: str = "devstoreaccount1",
        datastore_container: str = "somemodel",
    ) -> None:
        self.clock = clock or FakeClock()
        self.service = FakeService(self.clock)
        self.jobs = FakeJobs(self.service)
        self.environments = FakeEnvironments(self.service, upload_dir)
        self.models = FakeModels(self.service)
        self.workspaces = _Named(self.service, "workspaces", {workspace})
        self.compute = _Named(self.service, "compute", {compute})
        self.datastores = FakeDatastores(
            self.service, datastore, datastore_account, datastore_container
        )

    @property
    def calls(self) -> Counter[str]:
        return self.service.calls
