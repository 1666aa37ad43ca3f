"""How `python flows/train.py` and `python flows/score.py` run a flow: with the project's
Prefect settings, and one line when a run fails.

Prefect reads `prefect.toml` from the working directory only; the command lines
apply the checkout's own (a start-up timeout long enough for a fresh database,
analytics off, the backends' loggers in the run logs) from any directory, under
what the environment or a `prefect.toml` in the working directory already set.

Prefect's console logging prints the traceback of every failed task and flow
(about 100 lines for a missing input). By default the command lines keep the
progress lines but hold back errors and tracebacks from the console; they still
reach the run's log in the Prefect API and a log file under the cache
(`{cache}/logs/`, kept when the run fails). The command then ends with the
one-line cause and where to look. `--verbose` keeps Prefect's console output
as it is.

Without PREFECT_API_URL, Prefect runs the flow against a temporary server. The
command starts it itself, records it under the cache (flows/orphans.py) and
stops it before printing the outcome, so a killed command's server is stopped
by the next run, and the last line printed is the command's own.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import tomllib
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prefect.logging import get_logger
from prefect.logging.handlers import PrefectConsoleHandler
from prefect.settings import get_current_settings, temporary_settings
from prefect.states import State

from flows.failures import one_line_cause
from flows.orphans import reap_orphans, record_server
from flows.settings import REPO_ROOT, Settings

PROJECT_PREFECT_TOML = REPO_ROOT / "prefect.toml"

# Log files of failed command-line runs kept under `{cache}/logs/`; older ones are deleted.
KEPT_LOGS = 20


class PrefectApiUnreachableError(RuntimeError):
    """The Prefect API did not answer; the message names its URL and the settings involved."""


class PrefectApiCredentialsError(PrefectApiUnreachableError):
    """The Prefect API refused the request's credentials (401); the message names the setting."""


def check_prefect_api(timeout_seconds: float) -> None:
    """Fail within about `timeout_seconds` when the configured Prefect API does not answer.

    Without a check, a server that accepts connections and never answers keeps
    the command silent for minutes (Prefect's client retries each request). No
    PREFECT_API_URL: the flow starts its own temporary server, nothing to check.
    Any HTTP answer counts as alive; what it means is Prefect's to report, except
    a refusal of the credentials (a server started with an auth string), which
    would otherwise fail the run's first request with a traceback.
    """
    settings = get_current_settings()
    url = settings.api.url
    if not url:
        return
    auth_string, key = settings.api.auth_string, settings.api.key
    auth: tuple[str, str] | None = None
    headers: dict[str, str] = {}
    if auth_string:  # what Prefect's client sends: basic auth first, else the API key
        user, _, password = auth_string.get_secret_value().partition(":")
        auth = (user, password)
    elif key:
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"}
    fix = (
        "check that the server is up and that PREFECT_API_URL points at it "
        "(SOMEMODEL_API_CHECK_TIMEOUT_SECONDS sets how long to wait)"
    )
    base = url.rstrip("/")
    try:
        httpx.get(f"{base}/health", headers=headers, auth=auth, timeout=timeout_seconds)
        # /health answers anyone; this one only a caller with the server's credentials.
        answer = httpx.get(
            f"{base}/admin/version", headers=headers, auth=auth, timeout=timeout_seconds
        )
    except httpx.TimeoutException as exc:
        raise PrefectApiUnreachableError(
            f"the Prefect API at {url} did not answer within {timeout_seconds:g} s: {fix}"
        ) from exc
    except httpx.HTTPError as exc:
        raise PrefectApiUnreachableError(
            f"could not reach the Prefect API at {url} ({type(exc).__name__}): {fix}"
        ) from exc
    if answer.status_code == httpx.codes.UNAUTHORIZED:
        given = "PREFECT_API_AUTH_STRING" if auth_string else "no PREFECT_API_AUTH_STRING"
        raise PrefectApiCredentialsError(
            f"the Prefect API at {url} refused the credentials (401 Unauthorized; {given} "
            "set): set PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING "
            "(user:password), or PREFECT_API_KEY on Prefect Cloud (docs/api.md)"
        )


def read_prefect_toml(path: Path = PROJECT_PREFECT_TOML) -> dict[str, Any]:
    """The settings a `prefect.toml` holds, by dotted name (`server.analytics_enabled`...)."""
    if not path.is_file():  # not a checkout (e.g. installed from a wheel): Prefect's own
        return {}

    def flatten(table: dict[str, Any], prefix: str) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in table.items():
            if isinstance(value, dict):
                found |= flatten(value, f"{prefix}{key}.")
            else:
                found[f"{prefix}{key}"] = value
        return found

    return flatten(tomllib.loads(path.read_text(encoding="utf-8")), "")


@contextmanager
def project_prefect_settings(path: Path = PROJECT_PREFECT_TOML) -> Iterator[None]:
    """The checkout's `prefect.toml` as defaults: a setting already set elsewhere wins."""
    with temporary_settings(set_defaults=read_prefect_toml(path)):
        # Prefect hands its API handler to the extra loggers when it is imported,
        # before these settings existed; this is that step, for the loggers added here.
        api_handlers = logging.getLogger("prefect.extra").handlers
        for name in get_current_settings().logging.extra_loggers or ():
            logger = logging.getLogger(name)
            for handler in api_handlers:
                if handler not in logger.handlers:
                    logger.addHandler(handler)
        yield


class _NoErrorsOrTracebacks(logging.Filter):
    """Drops error records and records that carry a traceback; the CLI states the cause."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR and not record.exc_info


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """The `--verbose` option of both command lines."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print Prefect's full console output, tracebacks included, when a run fails",
    )


def _console_loggers() -> list[logging.Logger]:
    """The loggers that hold one of Prefect's console handlers."""
    loggers = [logging.getLogger()]
    loggers += [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    return [
        logger
        for logger in loggers
        if any(isinstance(handler, PrefectConsoleHandler) for handler in logger.handlers)
    ]


@contextmanager
def quiet_console(verbose: bool) -> Iterator[None]:
    """Hold errors and tracebacks back from Prefect's console handlers unless `verbose`."""
    if verbose:
        yield
        return
    handlers = {
        handler
        for logger in _console_loggers()
        for handler in logger.handlers
        if isinstance(handler, PrefectConsoleHandler)
    }
    quiet = _NoErrorsOrTracebacks()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


@contextmanager
def run_log(cache_dir: Path, command: str) -> Iterator[Path]:
    """Everything the console would show, tracebacks included, also in a file under the cache.

    Yields the file's path; the caller deletes it when the run succeeds. Only
    the newest KEPT_LOGS files are kept.
    """
    folder = cache_dir / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    handle, name = tempfile.mkstemp(prefix=f"{command}-{stamp}-", suffix=".log", dir=folder)
    os.close(handle)
    path = Path(name)
    handler = logging.FileHandler(path, encoding="utf-8", delay=False)
    handler.setFormatter(
        logging.Formatter("%(asctime)s | %(levelname)-7s | %(name)s - %(message)s")
    )
    loggers = _console_loggers()
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield path
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()
        for old in sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)[:-KEPT_LOGS]:
            old.unlink(missing_ok=True)


@contextmanager
def temporary_server(cache_dir: Path) -> Iterator[None]:
    """Prefect's temporary server for a run without PREFECT_API_URL: recorded under the cache
    as its process starts, stopped (logs drained first) when the block ends.

    It is the instance Prefect itself would start (one per process), so the flow
    run uses it. With PREFECT_API_URL set, nothing is started.
    """
    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        yield
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    launch = server._run_uvicorn_command
    records: list[Path] = []

    def launch_and_record() -> subprocess.Popen[Any]:
        # Recorded as soon as the process exists: start-up takes seconds, and a
        # kill in between must not leave an unrecorded server.
        process = launch()
        records.append(record_server(cache_dir, process.pid, server.port))
        return process

    server._run_uvicorn_command = launch_and_record  # type: ignore[method-assign]
    try:
        server.start()
        yield
    finally:
        try:
            APILogWorker.drain_all()
            EventsWorker.drain_all()
        finally:
            server.stop()
            for record in records:
                record.unlink(missing_ok=True)


def run_flow(
    start: Callable[[], State[Any]], verbose: bool, command: str = "run"
) -> tuple[bool, Any]:
    """Run a flow for a CLI: `(True, its result)`, or `(False, None)` after one printed line.

    With the project's Prefect settings: first stops what killed runs left
    behind (flows/orphans.py), checks the Prefect API (bounded by
    SOMEMODEL_API_CHECK_TIMEOUT_SECONDS) or starts a temporary server, then
    calls `start()`, which starts the flow with `return_state=True`. The server
    is stopped before anything is printed.
    """
    settings = Settings()
    state: State[Any] | None = None
    with (
        project_prefect_settings(),
        quiet_console(verbose),
        run_log(settings.cache_dir, command) as log_path,
    ):
        # Prefect's logger family: the console and the log file, not the API (no run yet).
        reap_orphans(settings.cache_dir, get_logger("somemodel.cli"))
        try:
            check_prefect_api(settings.api_check_timeout_seconds)
            with temporary_server(settings.cache_dir):
                state = start()
                result = result_or_raise(state)
        except Exception as exc:  # the CLI's job: one clear line, and a non-zero exit
            with log_path.open("a", encoding="utf-8") as log:
                log.write("".join(traceback.format_exception(exc)))
            failure: BaseException | None = exc
        else:
            failure = None
    if failure is None or isinstance(failure, PrefectApiUnreachableError):
        log_path.unlink(missing_ok=True)  # no run: the one line says it all
    if failure is None:
        return True, result
    print_failure(failure, state, verbose, log_path)
    return False, None


def result_or_raise(state: State[Any]) -> Any:
    """The flow's return value; the flow's exception when the run failed."""
    return state.result(raise_on_failure=True)


def print_failure(
    exc: BaseException, state: State[Any] | None, verbose: bool, log_path: Path | None = None
) -> None:
    """The cause on one line, then where the full log is (no run: the cause alone).

    The log file always; `prefect flow-run logs` only when the run's server
    outlives the command (PREFECT_API_URL is set), not for a temporary one.
    """
    if isinstance(exc, PrefectApiUnreachableError):
        print(f"error: {exc}", file=sys.stderr)
        return
    print(f"error: {str(exc) if verbose else one_line_cause(exc)}", file=sys.stderr)
    flow_run_id = state.state_details.flow_run_id if state is not None else None
    where = [str(log_path)] if log_path is not None else []
    if flow_run_id and get_current_settings().api.url:
        where.append(f"prefect flow-run logs {flow_run_id}")
    more = "" if verbose else ", or run again with --verbose"
    print(f"(full log and traceback: {' or '.join(where) or 'none kept'}{more})", file=sys.stderr)
