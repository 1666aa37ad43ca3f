"""The Azure ML compute backend: the one module that talks to `MLClient`.

It takes the pure builders' objects (flows/compute/aml_specs.py) to a
workspace and waits for them:

- `preflight()` reads the workspace, the compute target and the datastore
  before anything is uploaded, so a wrong credential, name or role fails the
  flow at once with what to fix;
- environments are get-or-create by `name:version` (a content hash): an
  existing version is reused and nothing is built;
- job names are deterministic (`{run_id}-{step}`): an existing job is attached
  to (a restarted or retried flow), never submitted twice;
- waiting polls the job's status with back-off while a thread streams its
  logs into the logger; Completed is success, anything else terminal raises
  `StepFailedError` with the job's error and its Studio URL; queueing and
  running have separate timeouts, and a job outliving either is cancelled;
- when the wait is interrupted (the Prefect run is cancelled, crashes or
  times out) the AML job is cancelled too before the exception goes on.

Transient service errors (429, 5xx, dropped connections) are retried by
azure-core's retry policy inside each request; what still fails after that is
retried here with back-off per operation, and user errors (400, 403, 404) are
not retried at all.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from azure.ai.ml import MLClient
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Environment, Job, Model
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from flows.compute.aml_specs import (
    AmlTarget,
    build_command_job,
    build_environment,
    build_parallel_run,
    environment_id,
)
from flows.compute.base import (
    EnvironmentRef,
    EnvironmentSpec,
    StepFailedError,
    StepResult,
    StepSpec,
)
from flows.plan import ParallelRun
from flows.settings import Settings

T = TypeVar("T")

COMPLETED = "Completed"
FAILED_STATES = frozenset({"Failed", "Canceled", "NotResponding", "Paused"})
TERMINAL_STATES = FAILED_STATES | {COMPLETED}
QUEUED_STATES = frozenset(
    {"NotStarted", "Queued", "Preparing", "Provisioning", "Starting", None, ""}
)
TRANSIENT_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})
LOG_TAIL_LINES = 40
MANAGEMENT_SCOPE = "https://management.azure.com/.default"


class AmlPreflightError(RuntimeError):
    """The workspace cannot be used as configured; the message says which setting or role."""


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


class Clock:
    """Time, injectable: the tests run an hour-long job in no time."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, wake: threading.Event | None = None) -> None:
        if wake is None:
            time.sleep(seconds)
        else:
            wake.wait(seconds)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return True
    return (
        isinstance(exc, HttpResponseError)
        and not isinstance(exc, ClientAuthenticationError)
        and exc.status_code in TRANSIENT_STATUS_CODES
    )


def make_credential(settings: Settings) -> TokenCredential:
    """A service principal when its three settings are given, else DefaultAzureCredential.

    Never an interactive login: these runs are unattended.
    """
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    if settings.aml_tenant_id and settings.aml_client_id and settings.aml_client_secret:
        return ClientSecretCredential(
            tenant_id=settings.aml_tenant_id,
            client_id=settings.aml_client_id,
            client_secret=settings.aml_client_secret.get_secret_value(),
        )
    return DefaultAzureCredential(exclude_interactive_browser_credential=True)


def make_ml_client(
    settings: Settings,
    credential: TokenCredential | None = None,
    **client_options: Any,
) -> MLClient:
    """The workspace client. The behaviour tests replace this function, and only this one.

    The flows pass `settings` alone. `credential` replaces the one from
    settings, and `client_options` go to `MLClient` as they are (`cloud` and
    `cloud_metadata` for a cloud the SDK does not know, `connection_verify`
    for a CA bundle): the HTTP tests (tests/integration/test_aml_http.py)
    point the real client at a fake workspace with them.
    """
    return MLClient(
        credential=credential or make_credential(settings),
        subscription_id=settings.aml_subscription_id,
        resource_group_name=settings.aml_resource_group,
        workspace_name=settings.aml_workspace,
        user_agent="somemodel-pipelines",
        **client_options,
    )


def prefect_tags() -> dict[str, str]:
    """The submitting Prefect flow run, as job tags (empty outside a flow run)."""
    from prefect.runtime import flow_run

    tags = {"prefect_flow_run_id": flow_run.id or ""}
    # Without PREFECT_UI_URL the runtime still builds a URL, starting with "None/".
    if (flow_run.ui_url or "").startswith(("http://", "https://")):
        tags["prefect_flow_run_url"] = flow_run.ui_url
    return {k: v for k, v in tags.items() if v}


class AmlCompute:
    kind = "aml"

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
    ) -> None:
        self.client = client
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
            **kwargs,
        )
        compute.preflight()
        return compute

    # --- calls to the service ------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """`fn()`, retried with back-off while the service answers 429/5xx."""

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.log.warning(
                "Azure ML %s failed transiently (attempt %d): %s; retrying",
                what,
                state.attempt_number,
                _first_line(exc),
            )

        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(self.retry_attempts),
            wait=wait_random_exponential(multiplier=2, max=60),
            sleep=self.clock.sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        return retrying(fn)

    def _find_job(self, name: str) -> Job | None:
        try:
            return self._call(f"get job {name}", lambda: self.client.jobs.get(name))
        except ResourceNotFoundError:
            return None

    # --- preflight -------------------------------------------------------------------------

    def preflight(self) -> None:
        """Fail fast, before any upload, when the identity or the workspace is wrong."""
        where = f"workspace {self.workspace!r}"
        try:
            self._call("get workspace", lambda: self.client.workspaces.get(self.workspace))
        except ClientAuthenticationError as exc:
            raise AmlPreflightError(
                f"cannot authenticate to Azure for {where}: {_first_line(exc)}. Give a "
                "managed identity, workload identity or `az login` to DefaultAzureCredential, "
                "or set SOMEMODEL_AML_TENANT_ID, SOMEMODEL_AML_CLIENT_ID and "
                "SOMEMODEL_AML_CLIENT_SECRET for a service principal"
            ) from exc
        except ResourceNotFoundError as exc:
            raise AmlPreflightError(
                f"{where} not found: check SOMEMODEL_AML_SUBSCRIPTION_ID, "
                "SOMEMODEL_AML_RESOURCE_GROUP and SOMEMODEL_AML_WORKSPACE"
            ) from exc
        except HttpResponseError as exc:
            raise AmlPreflightError(_access_message(exc, where)) from exc
        checks: list[tuple[str, Callable[[], object]]] = [
            (
                f"compute target {self.target.compute!r} (SOMEMODEL_AML_COMPUTE_TARGET)",
                lambda: self.client.compute.get(self.target.compute),
            ),
            (
                f"datastore {self.target.datastore!r} (SOMEMODEL_AML_DATASTORE)",
                lambda: self.client.datastores.get(self.target.datastore),
            ),
        ]
        for what, get in checks:
            try:
                self._call(f"get {what}", get)
            except ResourceNotFoundError as exc:
                raise AmlPreflightError(f"{where} has no {what}") from exc
            except HttpResponseError as exc:
                raise AmlPreflightError(_access_message(exc, f"{what} in {where}")) from exc
        self.log.info(
            "Azure ML %s reachable; compute %s, datastore %s",
            where,
            self.target.compute,
            self.target.datastore,
        )

    # --- environment -------------------------------------------------------------------------

    def prepare_environment(self, spec: EnvironmentSpec) -> EnvironmentRef:
        env_id = environment_id(spec.name, spec.version)
        try:
            self._call(
                f"get environment {env_id}",
                lambda: self.client.environments.get(name=spec.name, version=spec.version),
            )
            self.log.info("Reusing Azure ML environment %s", env_id)
            return EnvironmentRef(spec.name, spec.version, env_id, reused=True)
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
        return EnvironmentRef(spec.name, spec.version, env_id, reused=False)

    def _create_environment(self, environment: Environment) -> None:
        self._call(
            f"create environment {environment.name}",
            lambda: self.client.environments.create_or_update(environment),
        )

    # --- jobs -------------------------------------------------------------------------------

    def run_step(self, spec: StepSpec, environment: EnvironmentRef) -> StepResult:
        outputs = {o.name: o.path for o in spec.outputs}
        job = build_command_job(
            spec, environment_id(environment.name, environment.version), self.target, self.tags
        )
        return self.submit_job(job, step=spec.step, outputs=outputs)

    def run_parallel_step(self, run: ParallelRun, environment: EnvironmentRef) -> StepResult:
        """The step as an AML parallel job (a one-node pipeline job named `{run_id}-{step}`)."""
        outputs = {o.name: o.path for o in run.spec.outputs}
        job = build_parallel_run(
            run, environment_id(environment.name, environment.version), self.target, self.tags
        )
        self.log.info(
            "Scoring in parallel on %d node(s) of %s: %d process(es) each, %d file(s) per "
            "mini-batch",
            run.instance_count,
            self.target.compute,
            run.max_concurrency_per_instance,
            run.mini_batch_size,
        )
        return self.submit_job(job, step=run.spec.step, outputs=outputs)

    def submit_job(self, job: Job, *, step: str, outputs: Mapping[str, str]) -> StepResult:
        """Submit `job` (or attach to the job of that name) and wait for it to end.

        Any job with a deterministic name works: command jobs from `run_step`,
        the parallel scoring pipeline from `aml_specs.build_parallel_job`.
        """
        name = job.name or ""
        started = self.clock.now()
        current, attached = self._submit_or_attach(job)
        url = current.studio_url or ""
        status = job_status(current)
        if attached:
            self.log.info("Attaching to existing Azure ML job %s (%s): %s", name, status, url)
        else:
            self.log.info("Submitted Azure ML job %s: %s", name, url)
        if status == COMPLETED:
            return StepResult(step, name, COMPLETED, dict(outputs), url=url, reused=True)
        final = self._wait(name, url, status)
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
        except ResourceExistsError:
            created = None
        if created is not None:
            return created, False
        found = self._find_job(name)
        if found is None:
            raise StepFailedError(f"Azure ML job {name} was reported to exist but cannot be read")
        return found, True

    def _wait(self, name: str, url: str, status: str) -> str:
        stream = _LogStream(self.client, name, self.log)
        stream.start()
        try:
            status = self._poll_until_terminal(name, url, status, stream)
        except StepFailedError:
            raise  # a queue or run timeout, already cancelled
        except BaseException as exc:
            # Cancellation, a crash or a timeout of the Prefect run: the job
            # must not run on (and bill) without anyone waiting for it.
            self._cancel(name, reason=_first_line(exc) or type(exc).__name__)
            raise
        stream.join(self.log_drain_seconds)
        if status == COMPLETED:
            self.log.info("Azure ML job %s completed", name)
            return status
        error = stream.error or "no error message was recorded; see the job's logs"
        tail = "\n".join(stream.tail)
        raise StepFailedError(
            f"Azure ML job {name} ended {status}: {error}\nStudio: {url}"
            + (f"\nLast log lines:\n{tail}" if tail else "")
        )

    def _poll_until_terminal(self, name: str, url: str, status: str, stream: _LogStream) -> str:
        waiting_since = self.clock.now()
        running_since: float | None = None
        delays = self.schedule.delays()
        last = None
        stream_ended_seen = False
        while status not in TERMINAL_STATES:
            now = self.clock.now()
            if status in QUEUED_STATES:
                if now - waiting_since > self.queue_timeout_seconds:
                    self._cancel(name, reason="queue timeout")
                    raise StepFailedError(
                        f"Azure ML job {name} waited in state {status} for more than "
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
            self.log.error("Could not cancel Azure ML job %s: %s", name, _first_line(exc))

    # --- model registry --------------------------------------------------------------------

    def register_model(self, run_id: str, model_path: str, metrics: Mapping[str, Any]) -> str:
        """Register the verified model folder as `{model_name}:{run_id}`; idempotent.

        The version is the run id, so a retried flow finds its own registration
        instead of adding a version.
        """
        folder = model_path.rsplit("/", 1)[0]
        model_id = f"azureml:{self.model_name}:{run_id}"
        try:
            self._call(
                f"get model {model_id}",
                lambda: self.client.models.get(name=self.model_name, version=run_id),
            )
            self.log.info("Model %s already registered", model_id)
            return model_id
        except ResourceNotFoundError:
            pass
        tags = {"run_id": run_id, "model_path": model_path, **_metric_tags(metrics)}
        model = Model(
            name=self.model_name,
            version=run_id,
            type=AssetTypes.CUSTOM_MODEL,
            path=self.target.uri(folder, folder=True),
            description=f"somemodel trained and verified by run {run_id}",
            tags=tags,
        )
        self._call(f"register model {model_id}", lambda: self.client.models.create_or_update(model))
        self.log.info("Registered model %s", model_id)
        return model_id


# --- log streaming -----------------------------------------------------------------------


class _LogStream:
    """`jobs.stream(name)` in a thread, its output going to the logger line by line.

    The SDK streams by writing to `sys.stdout` and blocks until the job ends;
    the thread lets the caller poll, time out and cancel meanwhile. When the
    job fails, the SDK raises with the job's error, which is kept as `error`.
    """

    def __init__(
        self,
        client: MLClient,
        name: str,
        log: logging.Logger | logging.LoggerAdapter,
    ) -> None:
        self.client = client
        self.name = name
        self.log = log
        self.done = threading.Event()
        self.error: str | None = None
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._thread = threading.Thread(target=self._run, name=f"aml-logs-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _line(self, line: str) -> None:
        if line.strip():
            self.tail.append(line)
            self.log.info("[%s] %s", self.name, line)

    def _run(self) -> None:
        try:
            with _stdout_of_this_thread(self._line):
                self.client.jobs.stream(self.name)
        except Exception as exc:  # the poller decides the outcome; this only keeps the reason
            self.error = _job_error(exc)
            self.log.debug("Log stream of %s ended: %s", self.name, self.error)
        finally:
            self.done.set()


class _ThreadRoutedStdout(io.TextIOBase):
    """`sys.stdout` that sends the writes of registered threads to a line callback."""

    def __init__(self, fallback: Any) -> None:
        self.fallback = fallback
        self.sinks: dict[int, tuple[Callable[[str], None], list[str]]] = {}

    def write(self, text: str) -> int:
        routed = self.sinks.get(threading.get_ident())
        if routed is None:
            return int(self.fallback.write(text))
        sink, buffer = routed
        buffer.append(text)
        if "\n" in text:
            *lines, rest = "".join(buffer).split("\n")
            buffer[:] = [rest]
            for line in lines:
                sink(line)
        return len(text)

    def flush(self) -> None:
        self.fallback.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fallback, name)


_router_lock = threading.Lock()
_router: _ThreadRoutedStdout | None = None


@contextlib.contextmanager
def _stdout_of_this_thread(sink: Callable[[str], None]) -> Iterator[None]:
    global _router
    ident = threading.get_ident()
    with _router_lock:
        if _router is None or sys.stdout is not _router:
            _router = _ThreadRoutedStdout(sys.stdout)
            sys.stdout = _router
        router = _router
        router.sinks[ident] = (sink, [])
    try:
        yield
    finally:
        with _router_lock:
            _, buffer = router.sinks.pop(ident)
            if "".join(buffer).strip():
                sink("".join(buffer))
            if not router.sinks and sys.stdout is router:
                sys.stdout = router.fallback
                _router = None


# --- messages -----------------------------------------------------------------------------


def job_status(job: Job) -> str:
    """The job's status as plain text (the SDK gives an enum whose `str()` is its name)."""
    status = job.status
    return str(getattr(status, "value", status) or "")


def _first_line(exc: BaseException | None) -> str:
    text = str(exc or "").strip()
    return text.splitlines()[0] if text else ""


def _access_message(exc: HttpResponseError, what: str) -> str:
    if exc.status_code == 403:
        return (
            f"the identity may not read {what} (403): give it the 'AzureML Data Scientist' "
            f"role on the workspace. Service said: {_first_line(exc)}"
        )
    return f"cannot read {what} (HTTP {exc.status_code}): {_first_line(exc)}"


def _job_error(exc: Exception) -> str:
    """The job's error message out of the SDK's `Exception : {json}` text."""
    text = str(getattr(exc, "message", "") or exc).strip()
    _, _, body = text.partition("Exception :")
    try:
        error = json.loads(body.strip()) if body else None
    except json.JSONDecodeError:
        error = None
    if isinstance(error, dict):
        inner = error.get("error", error)
        message = inner.get("message") if isinstance(inner, dict) else None
        code = inner.get("code") if isinstance(inner, dict) else None
        if message:
            return f"{code}: {message}" if code else str(message)
    return text


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
