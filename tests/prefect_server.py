"""A real Prefect server for tests: `prefect server start` on a free loopback port.

Each server gets its own PREFECT_HOME (so its own SQLite database and
profiles), analytics off (no internet here) and no UI, and protects its API
with basic auth as the documented set-up does (docs/api.md): the server runs
with PREFECT_SERVER_API_AUTH_STRING, and every client the harness makes
(`env()`, `client()`, the `prefect_api` fixture) sends PREFECT_API_AUTH_STRING.
Start-up (importing the server, migrating a fresh database) takes 30 s or
more on a busy 2-core machine, so it waits up to 180 s; the session's server
is launched right after collection, so the tests before the first one that
needs it run meanwhile. Migrating a fresh SQLite database is most of that
(about 7 of 11 s on an idle machine), so the database is migrated once, by
`prefect server database upgrade`, into a template under .cache/test keyed by
Prefect's version and migrations, and each server starts on a copy of it (and
still runs its own migration check, a no-op at the head). Commands the test
runs against it (`prefect deploy`, `prefect worker start`...) get `env()`: the
same home, the server's API URL and credentials, and nothing of the
developer's own Prefect or SOMEMODEL_* settings.

Every process is started in its own session and stopped by process group, so
nothing it spawned (uvicorn workers, flow-run subprocesses) outlives the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import pytest

from flows.fsutil import file_lock
from tests.services import ServiceStartError, free_port

# Prefect is imported where used: the xdist controller loads this plugin too.
if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
PREFECT_BIN = VENV_BIN / "prefect"
STARTUP_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 20.0
# `user:password`, as `prefect server start` expects it; a test value, not a secret.
AUTH_STRING = "somemodel:test-only-password"
# Migrated SQLite databases, one per Prefect version and set of migrations.
DATABASE_TEMPLATES = REPO_ROOT / ".cache" / "test" / "prefect-db"
# Prefect's task-run recorder writes each state of each task run in a
# transaction of its own, just after the flow run that sent them; the next flow
# run's creation then often met SQLite busy (503) and retried 2 s later.
# Flow-run heartbeats, which tests/conftest.py turns off in the test process,
# used to hide that behind the 0.5 s they cost each run. In batches the
# recorder still records every task run, within a second. (Prefect takes the
# interval's whole seconds: 0.5 would make it flush in a loop, a core busy.)
SERVER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}
# The server of a session without `slow` or `integration` tests (`make
# test-fast`: no worker, no deployment run, every flow run in the test process)
# does not record task runs at all: no test of that tier reads them, and that
# is a third of the server's CPU there.
LEAN_SERVER_SETTINGS = {"PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false"}


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without PREFECT_* / SOMEMODEL_* variables, plus `extra`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PREFECT_", "SOMEMODEL_"))
    }
    env.update(extra or {})
    return env


def _stat_fields(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat from field 3 on (the command name, field 2, may hold spaces)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every descendant of `pid`, from /proc (CI and dev are Linux)."""
    tree: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(entry.name) if entry.name.isdigit() else None
        if fields:
            tree.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    found, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _kill_if_same(pid: int, started: str) -> None:
    """SIGKILL `pid` and its group, unless the pid now names another process."""
    fields = _stat_fields(pid)
    if fields is None or fields[19] != started:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)


def stop_process_group(
    process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_SECONDS
) -> None:
    """SIGTERM the process's group (it leads its own session), then SIGKILL what is left.

    Prefect starts each flow-run process in a process group of its own, so the
    leader's descendants are collected first and swept by pid as well.
    """
    spawned = descendants(process.pid)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for pid, started in spawned:
        _kill_if_same(pid, started)
    if process.poll() is None:
        process.wait()


def _default_sigint() -> None:
    # A shell starts background jobs (a CI step, `make test &`) with SIGINT
    # ignored, and that is inherited; Prefect's worker stops on SIGTERM by
    # sending itself SIGINT, which it would then never see.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class BackgroundProcess:
    """A long-running command in its own session, its output in a log file."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path) -> None:
        self.argv = list(argv)
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env=dict(env),
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_default_sigint,
            )

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no output)"

    def stop(self) -> None:
        stop_process_group(self.process)


def sqlite_migrations() -> Path:
    """The folder of Prefect's SQLite migrations (alembic's versions)."""
    import prefect

    return (
        Path(prefect.__file__).parent
        / "server"
        / "database"
        / "_migrations"
        / "versions"
        / "sqlite"
    )


def database_template_path() -> Path:
    """Where the template for this Prefect (version and migration files) is, built or not."""
    import prefect

    digest = hashlib.sha256(prefect.__version__.encode())
    for migration in sorted(sqlite_migrations().glob("*.py")):
        digest.update(migration.name.encode() + b"\0" + migration.read_bytes())
    return DATABASE_TEMPLATES / f"prefect-{prefect.__version__}-{digest.hexdigest()[:16]}.db"


def database_template() -> Path:
    """A database migrated to Prefect's head by `prefect server database upgrade`, built once.

    Built in a temporary PREFECT_HOME and copied with SQLite's backup API (so
    whatever was still in the write-ahead log is in the copy), checked, then
    renamed into place: a build that fails or is cut short leaves no template.
    The lock makes concurrent sessions (xdist workers) build it once.
    """
    template = database_template_path()
    if template.exists():
        return template
    with file_lock(DATABASE_TEMPLATES / ".lock"):
        if template.exists():
            return template
        with tempfile.TemporaryDirectory(prefix="build-", dir=DATABASE_TEMPLATES) as build:
            home = Path(build) / "home"
            home.mkdir()
            result = subprocess.run(
                [str(PREFECT_BIN), "server", "database", "upgrade", "-y"],
                cwd=home,
                env=clean_environment(
                    {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
                ),
                capture_output=True,
                text=True,
                timeout=STARTUP_TIMEOUT_SECONDS,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if result.returncode != 0:
                raise ServiceStartError(
                    f"`prefect server database upgrade` exited {result.returncode}:\n"
                    f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
                )
            built = Path(build) / "template.db"
            with (
                contextlib.closing(
                    sqlite3.connect(f"file:{home / 'prefect.db'}?mode=ro", uri=True)
                ) as source,
                contextlib.closing(sqlite3.connect(built)) as copy,
            ):
                source.backup(copy)
                if copy.execute("PRAGMA integrity_check").fetchone() != ("ok",):
                    raise ServiceStartError(f"the migrated database {built} is corrupt")
                if not copy.execute("SELECT version_num FROM alembic_version").fetchall():
                    raise ServiceStartError(f"the migrated database {built} has no version")
            built.replace(template)
    return template


class PrefectServer:
    """One `prefect server start` with its own PREFECT_HOME on 127.0.0.1:`port`.

    Its database starts as a copy of `database_template()`.
    """

    def __init__(self, home: Path, port: int | None = None, *, lean: bool = False) -> None:
        self.home = home
        self.lean = lean
        self.port = port or free_port()
        self.database = home / "prefect.db"
        self._server: BackgroundProcess | None = None
        self._launched = 0.0
        self._launcher: threading.Thread | None = None
        self._launch_error: BaseException | None = None
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for a process that talks to this server."""
        return clean_environment(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_API_URL": self.api_url,
                "PREFECT_API_AUTH_STRING": AUTH_STRING,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "false",
                "PREFECT_LOGGING_COLORS": "false",
                # Keep CLI output plain for the assertions and the logs.
                "PREFECT_CLI_COLORS": "false",
                "PREFECT_CLI_WRAP_LINES": "false",
                "NO_COLOR": "1",
                "COLUMNS": "200",
                **(extra or {}),
            }
        )

    def start(self) -> None:
        self.launch()
        self.wait_healthy()

    def launch_in_background(self) -> None:
        """`launch()` in a thread (a cold cache builds the template first): tests run meanwhile."""

        def launch() -> None:
            try:
                self.launch()
            except BaseException as exc:  # raised again by wait_healthy()
                self._launch_error = exc

        self._launcher = threading.Thread(target=launch, name="prefect-server-launch", daemon=True)
        self._launcher.start()

    def launch(self) -> None:
        """Start the server on a copy of the template; `wait_healthy()` waits until it answers."""
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(database_template(), self.database)
        env = self.env()
        # The server must not try to reach itself through a client URL.
        del env["PREFECT_API_URL"]
        env["PREFECT_SERVER_API_AUTH_STRING"] = AUTH_STRING
        env.update(LEAN_SERVER_SETTINGS if self.lean else SERVER_SETTINGS)
        with self._lock:
            if self._stopped:  # stopped while the template was being built
                return
            self._launched = time.monotonic()
            self._server = BackgroundProcess(
                [
                    str(PREFECT_BIN),
                    "server",
                    "start",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=env,
                log=self.home / "server.log",
                cwd=self.home,
            )

    def wait_healthy(self) -> None:
        if self._launcher is not None:
            self._launcher.join()
            if self._launch_error is not None:
                raise ServiceStartError(
                    f"prefect server could not be launched: {self._launch_error!r}"
                ) from self._launch_error
        assert self._server is not None
        deadline = self._launched + STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if not self._server.running:
                raise ServiceStartError(
                    f"prefect server exited during start-up:\n{self._server.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                    if json.loads(answer.read()) is True:
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        log = self._server.log_tail()
        self.stop()
        raise ServiceStartError(
            f"prefect server did not answer {self.api_url}/health within "
            f"{STARTUP_TIMEOUT_SECONDS:.0f} s:\n{log}"
        )

    def log_tail(self) -> str:
        return self._server.log_tail() if self._server else "(not started)"

    @property
    def pid(self) -> int:
        """The server process's pid (it is running)."""
        assert self._server is not None
        return self._server.process.pid

    def run_cli(
        self,
        args: Sequence[str],
        *,
        cwd: Path = REPO_ROOT,
        extra_env: Mapping[str, str] | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """Run `prefect <args>` against this server; output captured, never raises on exit code."""
        return subprocess.run(
            [str(PREFECT_BIN), *args],
            cwd=cwd,
            env=self.env(extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def start_background(
        self,
        argv: Sequence[str],
        *,
        log: Path,
        cwd: Path = REPO_ROOT,
        extra_env: Mapping[str, str] | None = None,
    ) -> BackgroundProcess:
        """Start a long-running command (a worker, `serve`) against this server; caller stops it."""
        return BackgroundProcess(argv, env=self.env(extra_env), log=log, cwd=cwd)

    def delete_unfinished_runs(self) -> int:
        """Delete every flow run that has not reached a final state; return how many.

        Tests share this server: runs an earlier test left behind (scheduled by a
        deployment's schedule, or created by a trigger after its worker stopped)
        would otherwise be picked up by the next test's worker, with that test's
        storage.
        """
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        unfinished = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
        unfinished += [StateType.PAUSED, StateType.CANCELLING]
        with self.client() as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished))
                )
            )
            for run in runs:
                client.delete_flow_run(run.id)
        return len(runs)

    def read_result(self, flow_run_id: UUID, key: str) -> Any:
        """The data of the run's JSON result artifact `key` (flows/results.py), from the API."""
        from prefect.client.schemas.filters import (
            ArtifactFilter,
            ArtifactFilterFlowRunId,
            ArtifactFilterKey,
        )

        with self.client() as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                    key=ArtifactFilterKey(any_=[key]),
                )
            )
        assert len(artifacts) == 1, [a.key for a in artifacts]
        assert artifacts[0].type == "json"
        return artifacts[0].data

    @contextlib.contextmanager
    def client(self) -> Iterator[SyncPrefectClient]:
        """A Prefect client for this server, whatever API the test process points at."""
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        with (
            temporary_settings(
                updates={PREFECT_API_URL: self.api_url, PREFECT_API_AUTH_STRING: AUTH_STRING}
            ),
            get_client(sync_client=True) as client,
        ):
            yield client

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        if self._launcher is not None and self._launcher is not threading.current_thread():
            self._launcher.join()  # a template build in progress finishes (or fails) first
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()


@contextlib.contextmanager
def running_prefect_server(home: Path) -> Iterator[PrefectServer]:
    server = PrefectServer(home)
    try:
        server.start()
    except ServiceStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


_SESSION_SERVER = pytest.StashKey[PrefectServer]()


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (`timeout`, a cancelled CI job) ends the session like Ctrl-C does.

    pytest then tears the session down, stopping the servers, workers and
    Azurite it started; by default SIGTERM would kill pytest alone and leave
    them running.
    """
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def needs_full_server(items: Sequence[pytest.Item]) -> bool:
    """Whether a session of these tests needs every server service (not LEAN_SERVER_SETTINGS)."""
    return any(item.get_closest_marker(m) for item in items for m in ("slow", "integration"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Launch the session's server now if a test will use it: it boots while others run."""
    if session.config.option.collectonly or not any(
        "prefect_server" in getattr(item, "fixturenames", ()) for item in session.items
    ):
        return
    home = Path(tempfile.mkdtemp(prefix="prefect-home-"))
    server = PrefectServer(home, lean=not needs_full_server(session.items))
    server.launch_in_background()
    session.config.stash[_SESSION_SERVER] = server

    def stop() -> None:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)

    session.config.add_cleanup(stop)


@pytest.fixture(scope="session")
def prefect_server(request: pytest.FixtureRequest) -> Iterator[PrefectServer]:
    """The session's one real Prefect server (SQLite, temporary PREFECT_HOME)."""
    server = request.config.stash.get(_SESSION_SERVER, None)
    if server is None:  # not launched at collection (a test requested it dynamically)
        with running_prefect_server(Path(tempfile.mkdtemp(prefix="prefect-home-"))) as server:
            yield server
        return
    try:
        server.wait_healthy()
    except ServiceStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def check_cli(result: subprocess.CompletedProcess[str], what: str) -> str:
    """`result`'s stdout, or the test fails showing both streams' tails."""
    if result.returncode != 0:
        pytest.fail(
            f"{what} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def wait_final(
    server: PrefectServer,
    worker: BackgroundProcess,
    flow_run_id: UUID,
    timeout: float,
    poll: float = 0.5,
) -> FlowRun:
    """The flow run once it is final; the test fails if `worker` dies or time runs out."""
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while time.monotonic() < deadline:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            if not worker.running:
                pytest.fail(f"the worker exited:\n{worker.log_tail()}")
            time.sleep(poll)
    pytest.fail(f"flow run {flow_run_id} not finished after {timeout:.0f} s:\n{worker.log_tail()}")
