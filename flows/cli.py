"""What `python flows/train.py` and `python flows/score.py` print when a run fails.

Prefect's console logging prints the traceback of every failed task and flow
(about 100 lines for a missing input). By default the command lines keep the
progress lines but hold back errors and tracebacks from the console; they still
reach the run's log in the Prefect API. The command then ends with the one-line
cause and where to look. `--verbose` keeps Prefect's console output as it is.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from prefect.logging.handlers import PrefectConsoleHandler
from prefect.settings import get_current_settings
from prefect.states import State

from flows.failures import one_line_cause
from flows.settings import Settings


class PrefectApiUnreachableError(RuntimeError):
    """The Prefect API did not answer; the message names its URL and the settings involved."""


def check_prefect_api(timeout_seconds: float) -> None:
    """Fail within about `timeout_seconds` when the configured Prefect API does not answer.

    Without a check, a server that accepts connections and never answers keeps
    the command silent for minutes (Prefect's client retries each request). No
    PREFECT_API_URL: the flow starts its own temporary server, nothing to check.
    Any HTTP answer counts as alive; what it means is Prefect's to report.
    """
    settings = get_current_settings()
    url = settings.api.url
    if not url:
        return
    key = settings.api.key
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    fix = (
        "check that the server is up and that PREFECT_API_URL points at it "
        "(SOMEMODEL_API_CHECK_TIMEOUT_SECONDS sets how long to wait)"
    )
    try:
        httpx.get(f"{url.rstrip('/')}/health", headers=headers, timeout=timeout_seconds)
    except httpx.TimeoutException as exc:
        raise PrefectApiUnreachableError(
            f"the Prefect API at {url} did not answer within {timeout_seconds:g} s: {fix}"
        ) from exc
    except httpx.HTTPError as exc:
        raise PrefectApiUnreachableError(
            f"could not reach the Prefect API at {url} ({type(exc).__name__}): {fix}"
        ) from exc


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


@contextmanager
def quiet_console(verbose: bool) -> Iterator[None]:
    """Hold errors and tracebacks back from Prefect's console handlers unless `verbose`."""
    if verbose:
        yield
        return
    loggers = [logging.getLogger()]
    loggers += [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    handlers = {
        handler
        for logger in loggers
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


def run_flow(start: Callable[[], State[Any]], verbose: bool) -> tuple[bool, Any]:
    """Run a flow for a CLI: `(True, its result)`, or `(False, None)` after one printed line.

    Checks the Prefect API first (bounded by SOMEMODEL_API_CHECK_TIMEOUT_SECONDS),
    then calls `start()`, which starts the flow with `return_state=True`.
    """
    state = None
    with quiet_console(verbose):
        try:
            check_prefect_api(Settings().api_check_timeout_seconds)
            state = start()
            return True, result_or_raise(state)
        except Exception as exc:  # the CLI's job: one clear line, and a non-zero exit
            print_failure(exc, state, verbose)
            return False, None


def result_or_raise(state: State[Any]) -> Any:
    """The flow's return value; the flow's exception when the run failed."""
    return state.result(raise_on_failure=True)


def print_failure(exc: BaseException, state: State[Any] | None, verbose: bool) -> None:
    """The cause on one line, then where the full log is (no run: the cause alone)."""
    if isinstance(exc, PrefectApiUnreachableError):
        print(f"error: {exc}", file=sys.stderr)
        return
    print(f"error: {str(exc) if verbose else one_line_cause(exc)}", file=sys.stderr)
    flow_run_id = state.state_details.flow_run_id if state is not None else None
    where = f"prefect flow-run logs {flow_run_id}" if flow_run_id else "the Prefect run's log"
    more = "" if verbose else ", or run again with --verbose"
    print(f"(full log and traceback: {where}{more})", file=sys.stderr)
