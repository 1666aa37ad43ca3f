"""The Azure ML job runner: environments, jobs and models in the workspace.

It takes the pure builders' objects (flows/compute/aml_specs.py) to a
workspace and waits for them. The client, its retries and the preflight checks
live in flows/compute/aml_client.py, the log stream in flows/compute/aml_logs.py.

- environments are get-or-create by `name:version` (a content hash): an
  existing version is reused and nothing is built;
- job names are deterministic (`{run_id}-{step}`): an existing job is attached
  to (a restarted or retried flow), never submitted twice; a submission that
  loses a race for the name (the service answers 400, not 409) attaches too;
- waiting polls the job's status with back-off while a thread streams its
  logs into the logger; Completed is success, anything else terminal raises
  `StepFailedError` with the job's error and its Studio URL (from the run
  record when the log stream broke); queueing and running have separate
  timeouts, a pipeline job's going by its child jobs, and a job outliving
  either is cancelled;
- models are registered under versions the service numbers, found again by
  the run id and model sha256 in their tags;
- when the wait is interrupted (the Prefect run is cancelled, crashes or
  times out) the AML job is cancelled too before the exception goes on.

Transient service errors (429, 5xx, dropped connections) are retried by
azure-core's retry policy inside each request; what still fails after that is
retried with back-off per operation (`call_with_retry`), and user errors (400,
403, 404) are not retried at all.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from azure.ai.ml import MLClient
from azure.ai.ml.constants import AssetTypes, ListViewType
from azure.ai.ml.entities import Environment, Job, Model, PipelineJob
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from flows.compute.aml_client import (
    BlobLocation,
    Clock,
    call_with_retry,
    check_workspace,
    first_line,
    make_ml_client,
    prefect_tags,
)
from flows.compute.aml_logs import LogStream, run_error
from flows.compute.aml_specs import (
    AmlTarget,
    build_command_job,
    build_environment,
    environment_id,
    environment_version,
)
from flows.compute.base import (
    EnvironmentRef,
    EnvironmentSpec,
    ModelToRegister,
    Registration,
    StepFailedError,
    StepResult,
    StepSpec,
)
from flows.settings import Settings

T = TypeVar("T")

COMPLETED = "Completed"
FAILED_STATES = frozenset({"Failed", "Canceled", "NotResponding", "Paused"})
TERMINAL_STATES = FAILED_STATES | {COMPLETED}
QUEUED_STATES = frozenset(
    {"NotStarted", "Queued", "Preparing", "Provisioning", "Starting", None, ""}
)


@dataclass(frozen=True)
class PollSchedule:
    """Status polls back off from `initial` to `maximum` seconds.

    A one-hour job costs about 35 status reads at the defaults; the log stream
    wakes the poller as soon as the job ends, so the back-off adds no latency.
    """

    initial: float = 10.0
    factor: float = 1.5
    maximum: float = 120.0

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(self.maximum, delay * self.factor)


class AmlCompute:
    def __init__(
        self,
        client: MLClient,
        target: AmlTarget,
        *,
        workspace: str,
        queue_timeout_seconds: float,
        run_timeout_seconds: float,
        model_name: str = "somemodel",
        tags: Mapping[str, str] | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        clock: Clock | None = None,
        schedule: PollSchedule | None = None,
        retry_attempts: int = 6,
        log_drain_seconds: float = 15.0,
        cancel_wait_seconds: float = 300.0,
        storage: BlobLocation | None = None,
    ) -> None:
        self.client = client
        # The blob container of the settings, which the datastore must point at.
        self.storage = storage
        self.target = target
        self.workspace = workspace
        self.queue_timeout_seconds = queue_timeout_seconds
        self.run_timeout_seconds = run_timeout_seconds
        self.model_name = model_name
        self.tags = dict(tags or {})
        self.log = logger or logging.getLogger(__name__)
        self.clock = clock or Clock()
        self.schedule = schedule or PollSchedule()
        self.retry_attempts = retry_attempts
        self.log_drain_seconds = log_drain_seconds
        self.cancel_wait_seconds = cancel_wait_seconds

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        **kwargs: Any,
    ) -> AmlCompute:
        """The backend for `settings`, checked against the workspace before it is returned."""
        compute = cls(
            make_ml_client(settings),
            AmlTarget.from_settings(settings),
            workspace=settings.aml_workspace or "",
            queue_timeout_seconds=settings.aml_queue_timeout_seconds,
            run_timeout_seconds=settings.aml_run_timeout_seconds,
            model_name=settings.aml_model_name,
            tags=prefect_tags(),
            logger=logger,
            storage=BlobLocation.from_settings(settings),
            **kwargs,
        )
        compute.preflight()
        return compute

    # --- calls to the service ------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return call_with_retry(
            what, fn, attempts=self.retry_attempts, sleep=self.clock.sleep, log=self.log
        )

    def _find_job(self, name: str) -> Job | None:
        try:
            return self._call(f"get job {name}", lambda: self.client.jobs.get(name))
        except ResourceNotFoundError:
            return None

    # --- preflight -------------------------------------------------------------------------

    def preflight(self) -> None:
        """Fail fast, before any upload, when the identity or the workspace is wrong."""
        check_workspace(
            self._call, self.client, self.target, self.workspace, self.log, self.storage
        )

    # --- environment -------------------------------------------------------------------------

    def prepare_environment(self, spec: EnvironmentSpec) -> EnvironmentRef:
        # The version hashes the whole recipe (aml_specs.environment_version),
        # not only what `spec.version` covers.
        version = environment_version(spec)
        env_id = environment_id(spec.name, version)
        try:
            self._call(
                f"get environment {env_id}",
                lambda: self.client.environments.get(name=spec.name, version=version),
            )
            self.log.info("Reusing Azure ML environment %s", env_id)
            return EnvironmentRef(spec.name, version, env_id, reused=True)
        except ResourceNotFoundError:
            pass
        self.log.info(
            "Creating Azure ML environment %s: %s + %s + %s",
            env_id,
            spec.base_image,
            " ".join(spec.pip_packages),
            spec.wheel.filename,
        )
        with tempfile.TemporaryDirectory(prefix="aml-env-") as tmp:
            environment = build_environment(spec, Path(tmp) / "context")
            try:
                self._create_environment(environment)
            except ResourceExistsError:
                # Another run created the same content-addressed version first.
                self.log.info("Environment %s was created concurrently; reusing it", env_id)
        return EnvironmentRef(spec.name, version, env_id, reused=False)

    def _create_environment(self, environment: Environment) -> None:
        self._call(
            f"create environment {environment.name}",
            lambda: self.client.environments.create_or_update(environment),
        )

    # --- jobs -------------------------------------------------------------------------------

    def run_step(
        self,
        spec: StepSpec,
        environment: EnvironmentRef,
        stopping: threading.Event | None = None,
    ) -> StepResult:
        outputs = {o.name: o.path for o in spec.outputs}
        job = build_command_job(
            spec, environment_id(environment.name, environment.version), self.target, self.tags
        )
        return self.submit_job(job, step=spec.step, outputs=outputs, stopping=stopping)

    def run_steps(self, specs: Sequence[StepSpec], environment: EnvironmentRef) -> list[StepResult]:
        """Submit every step as its own command job and wait for all of them at once.

        Each job keeps `run_step`'s semantics (attach by name, log stream,
        timeouts). When one fails, the others are cancelled (a job not yet
        submitted is not submitted) and the first failure is raised.
        """
        if len(specs) <= 1:
            return [self.run_step(spec, environment) for spec in specs]
        stopping = threading.Event()

        def run(spec: StepSpec) -> StepResult:
            if stopping.is_set():
                raise StepFailedError(f"Azure ML job {spec.job_name} not submitted: another failed")
            return self.run_step(spec, environment, stopping)

        self.log.info("Submitting %d Azure ML jobs side by side", len(specs))
        with ThreadPoolExecutor(max_workers=len(specs), thread_name_prefix="aml-job") as pool:
            futures = {pool.submit(run, spec): spec for spec in specs}
            error: BaseException
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                failed = [f for f in futures if f in done and f.exception() is not None]
                if not failed:
                    return [future.result() for future in futures]
                reason = f"{futures[failed[0]].job_name} failed"
                error = failed[0].exception()  # type: ignore[assignment]
            except BaseException as exc:
                # The flow run was cancelled or crashed while waiting: no job may run on.
                reason, error = f"the flow stopped waiting ({type(exc).__name__})", exc
            stopping.set()
            for future, spec in futures.items():
                if not future.done():
                    self._cancel(spec.job_name, reason=reason)
            wait(futures)
            raise error

    def submit_job(
        self,
        job: Job,
        *,
        step: str,
        outputs: Mapping[str, str],
        stopping: threading.Event | None = None,
    ) -> StepResult:
        """Submit `job` (or attach to the job of that name) and wait for it to end.

        Any job with a deterministic name works (command jobs from `run_step`).
        `stopping` is a fan-out's: set once the job exists, the fan-out has
        given up, and perhaps already tried to cancel the job before it existed,
        so the job cancels itself rather than run on with no one waiting for it.
        """
        name = job.name or ""
        started = self.clock.now()
        current, attached = self._submit_or_attach(job)
        if stopping is not None and stopping.is_set():
            self._cancel(name, reason="another job of the fan-out failed")
            raise StepFailedError(f"Azure ML job {name} cancelled: another job failed")
        url = current.studio_url or ""
        status = job_status(current)
        if attached:
            self.log.info("Attaching to existing Azure ML job %s (%s): %s", name, status, url)
        else:
            self.log.info("Submitted Azure ML job %s: %s", name, url)
        if status == COMPLETED:
            return StepResult(step, name, COMPLETED, dict(outputs), url=url, reused=True)
        pipeline = isinstance(job, PipelineJob) or getattr(current, "type", None) == "pipeline"
        final = self._wait(name, url, status, pipeline=pipeline)
        return StepResult(
            step,
            name,
            final,
            dict(outputs),
            url=url,
            reused=attached,
            duration_seconds=self.clock.now() - started,
        )

    def _submit_or_attach(self, job: Job) -> tuple[Job, bool]:
        name = job.name or ""
        existing = self._find_job(name)
        if existing is not None:
            return existing, True
        attempts = 0

        def create() -> Job | None:
            nonlocal attempts
            attempts += 1
            # A retry first checks whether the attempt whose answer was lost went through.
            if attempts > 1 and self._find_job(name) is not None:
                return None
            return self.client.jobs.create_or_update(job)

        try:
            created = self._call(f"create job {name}", create)
        except HttpResponseError as exc:
            # The service answers a PUT of an existing job name with 400 UserError
            # ("A job with this name already exists"), not 409: another submission
            # with this run id won the race. A 400 with no job under the name is
            # a real user error and goes on as it is.
            if exc.status_code not in (400, 409):
                raise
            found = self._find_job(name)
            if found is None:
                raise
            self.log.info("Azure ML job %s was submitted concurrently; attaching to it", name)
            return found, True
        if created is not None:
            return created, False
        found = self._find_job(name)
        if found is None:
            raise StepFailedError(f"Azure ML job {name} was reported to exist but cannot be read")
        return found, True

    def _wait(self, name: str, url: str, status: str, *, pipeline: bool = False) -> str:
        stream = LogStream(self.client, name, self.log)
        stream.start()
        try:
            status = self._poll_until_terminal(name, url, status, stream, pipeline=pipeline)
        except StepFailedError:
            raise  # a queue or run timeout, already cancelled
        except BaseException as exc:
            # Cancellation, a crash or a timeout of the Prefect run: the job
            # must not run on (and bill) without anyone waiting for it.
            self._cancel(name, reason=first_line(exc) or type(exc).__name__)
            raise
        stream.join(self.log_drain_seconds)
        if status == COMPLETED:
            self.log.info("Azure ML job %s completed", name)
            return status
        error = (
            stream.error
            or self._recorded_error(name)
            or "no error message was recorded; see the job's logs"
        )
        tail = "\n".join(stream.tail)
        raise StepFailedError(
            f"Azure ML job {name} ended {status}: {error}\nStudio: {url}"
            + (f"\nLast log lines:\n{tail}" if tail else "")
        )

    def _recorded_error(self, name: str) -> str | None:
        """The job's error from its run record, for when the log stream could not report it.

        `jobs.get` carries no error; the SDK's stream reads it from the run
        history, so when the stream broke early (storage it may not list) the
        runner reads the same record through the SDK's run operations.
        """
        try:
            details = self._call(
                f"get run details of {name}",
                lambda: self.client.jobs._runs_operations.get_run_details(name),
            )
        except HttpResponseError as exc:
            self.log.warning("Cannot read the error of Azure ML job %s: %s", name, first_line(exc))
            return None
        return run_error(details)

    def _timing_state(self, name: str, status: str, pipeline: bool) -> str:
        """The state the queue and run timeouts go by.

        A pipeline job is Running as soon as it is scheduled, while its child
        jobs still wait for nodes: until a child leaves the queue, the pipeline
        counts as queued, so the queue timeout applies to it and the run
        timeout starts only when a child runs.
        """
        if not pipeline or status in QUEUED_STATES or status in TERMINAL_STATES:
            return status
        try:
            children = self._call(
                f"list child jobs of {name}",
                lambda: list(self.client.jobs.list(parent_job_name=name)),
            )
        except HttpResponseError as exc:
            # Not worth failing (and so cancelling) a running job over: the
            # timeouts then go by the pipeline's own status, as before.
            self.log.warning("Cannot list the child jobs of %s: %s", name, first_line(exc))
            return status
        if any(job_status(child) not in QUEUED_STATES for child in children):
            return status
        return "Queued"

    def _poll_until_terminal(
        self, name: str, url: str, status: str, stream: LogStream, *, pipeline: bool = False
    ) -> str:
        waiting_since = self.clock.now()
        running_since: float | None = None
        delays = self.schedule.delays()
        last = None
        stream_ended_seen = False
        while status not in TERMINAL_STATES:
            now = self.clock.now()
            phase = self._timing_state(name, status, pipeline)
            if phase in QUEUED_STATES:
                if now - waiting_since > self.queue_timeout_seconds:
                    self._cancel(name, reason="queue timeout")
                    raise StepFailedError(
                        f"Azure ML job {name} waited in state {phase} for more than "
                        f"{self.queue_timeout_seconds:.0f} s "
                        "(SOMEMODEL_AML_QUEUE_TIMEOUT_SECONDS) and was cancelled; check that "
                        f"compute {self.target.compute!r} can scale up.\nStudio: {url}"
                    )
            else:
                running_since = now if running_since is None else running_since
                if now - running_since > self.run_timeout_seconds:
                    self._cancel(name, reason="run timeout")
                    raise StepFailedError(
                        f"Azure ML job {name} ran for more than {self.run_timeout_seconds:.0f} s "
                        f"(SOMEMODEL_AML_RUN_TIMEOUT_SECONDS) and was cancelled.\nStudio: {url}"
                    )
            if status != last:
                self.log.info("Azure ML job %s: %s", name, status)
                last = status
            # The end of the log stream usually means the job ended: poll at once,
            # once. A stream that ended early (403 on run history, say) must not
            # turn the back-off into a busy loop, so after that, plain delays.
            if stream.done.is_set() and not stream_ended_seen:
                stream_ended_seen = True
            else:
                self.clock.sleep(next(delays), None if stream_ended_seen else stream.done)
            status = job_status(self._call(f"get job {name}", lambda: self.client.jobs.get(name)))
        return status

    def _cancel(self, name: str, reason: str) -> None:
        self.log.warning("Cancelling Azure ML job %s (%s)", name, reason)
        try:
            self._call(f"cancel job {name}", lambda: self.client.jobs.begin_cancel(name))
            deadline = self.clock.now() + self.cancel_wait_seconds
            delays = PollSchedule(initial=5, factor=1.5, maximum=30).delays()
            while self.clock.now() < deadline:
                status = job_status(
                    self._call(f"get job {name}", lambda: self.client.jobs.get(name))
                )
                if status in TERMINAL_STATES:
                    self.log.warning("Azure ML job %s is %s", name, status)
                    return
                self.clock.sleep(next(delays))
            self.log.error(
                "Azure ML job %s did not reach a terminal state within %.0f s of cancelling",
                name,
                self.cancel_wait_seconds,
            )
        except HttpResponseError as exc:
            # Best effort: the original error is what the caller must see.
            self.log.error("Could not cancel Azure ML job %s: %s", name, first_line(exc))

    # --- model registry --------------------------------------------------------------------

    def register_model(self, to_register: ModelToRegister) -> Registration:
        """Register the verified model folder under `model_name`; idempotent per run.

        Azure ML accepts only positive integers as model versions
        (`ModelVersionOutOfRange` otherwise), so the service assigns the
        version and the run id and the model's sha256 go into tags. A retried
        flow finds its own registration by those tags instead of adding a
        version.
        """
        run_id, folder = to_register.run_id, to_register.folder
        existing = self._find_registered(to_register)
        if existing is not None:
            model_id = f"azureml:{self.model_name}:{existing.version}"
            self.log.info("Model of run %s already registered as %s", run_id, model_id)
            return Registration(model_id, f"already registered as {model_id}")
        tags = {
            "run_id": run_id,
            "model_sha256": to_register.model_sha256,
            "model_path": folder,
            **_metric_tags(to_register.metrics),
        }
        model = Model(
            name=self.model_name,
            type=AssetTypes.CUSTOM_MODEL,
            path=self.target.uri(folder, folder=True),
            description=f"somemodel trained and verified by run {run_id}",
            tags=tags,
        )
        attempts = 0

        def create() -> Model:
            nonlocal attempts
            attempts += 1
            # A retry first checks whether the attempt whose answer was lost went through.
            found = self._find_registered(to_register) if attempts > 1 else None
            return found or self.client.models.create_or_update(model)

        created = self._call(f"register model {self.model_name}", create)
        model_id = f"azureml:{self.model_name}:{created.version}"
        self.log.info("Registered the model of run %s as %s", run_id, model_id)
        return Registration(model_id, f"registered as {model_id}")

    def _find_registered(self, to_register: ModelToRegister) -> Model | None:
        """The version of `model_name` tagged with this run id and model sha256, if any."""

        def versions() -> list[Model]:
            try:
                # Archived versions count too: a run is registered once, ever.
                return list(
                    self.client.models.list(name=self.model_name, list_view_type=ListViewType.ALL)
                )
            except ResourceNotFoundError:
                return []  # no model of that name yet

        for model in self._call(f"list versions of model {self.model_name}", versions):
            tags = model.tags or {}
            if (
                tags.get("run_id") == to_register.run_id
                and tags.get("model_sha256") == to_register.model_sha256
            ):
                return model
        return None


# --- log streaming -----------------------------------------------------------------------


# --- messages -----------------------------------------------------------------------------


def job_status(job: Job) -> str:
    """The job's status as plain text (the SDK gives an enum whose `str()` is its name)."""
    status = job.status
    return str(getattr(status, "value", status) or "")


def _metric_tags(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    tags: dict[str, str] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            tags.update(_metric_tags(value, prefix=f"{prefix}{key}."))
        elif isinstance(value, float):
            tags[f"{prefix}{key}"] = f"{value:.6g}"
        else:
            tags[f"{prefix}{key}"] = str(value)
    return tags
