"""What a failed run shows where people look: its state message and its log.

- The state message (the run page in the UI, `prefect flow-run inspect`, the
  failure notification) is the cause on one line. Prefect would write
  "Flow run encountered an exception: DatastoreNotFoundError: ..." and, for a
  failed step, its output's last lines after it.
- The traceback is in the run's log once. Prefect logs the same exception
  from the failed task, again from the flow, and a third time when the
  worker's flow-run process exits; the later records keep their line, without
  the traceback.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from prefect import Flow
from prefect.states import Failed, State

P = ParamSpec("P")
R = TypeVar("R")

# The loggers Prefect's task and flow engines log a run's errors on.
RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


class OneTracebackPerError(logging.Filter):
    """Keeps the traceback of an exception's first record; later records of it keep the line."""

    def __init__(self, remember: int = 64) -> None:
        super().__init__()
        # Exceptions do not support weak references; a short memory is enough,
        # as the repeats follow the first record within one run.
        self._logged: deque[BaseException] = deque(maxlen=remember)

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None:
            return True
        if any(error is logged for logged in self._logged):
            record.exc_info = None
            record.exc_text = None
        else:
            self._logged.append(error)
        return True


_ONE_TRACEBACK = OneTracebackPerError()


def log_each_traceback_once() -> None:
    """Install the filter on the run loggers of this process (once)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if _ONE_TRACEBACK not in logger.filters:
            logger.addFilter(_ONE_TRACEBACK)


def one_line_cause(exc: BaseException) -> str:
    """The first line of the message; for a step failure ("... Last output:" and the step's
    output tail) also its last line, where the step states its own error.
    """
    lines = [line.strip() for line in (str(exc) or type(exc).__name__).splitlines()]
    lines = [line for line in lines if line]
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    return f"{lines[0]} {lines[-1]}"


def fails_with_its_cause(flow: Flow[P, R]) -> Flow[P, R]:
    """`flow`, whose failure is a Failed state with the one-line cause as its message.

    Applied over `@flow`, so Prefect has already read the function's signature,
    docstring and source file (the parameter schema, the flow's version); the
    run then calls the wrapped function. The exception stays the state's
    data, so calling the flow still raises it, and `state.result()` too.
    """
    flow.fn = _returning_failed_states(flow.fn)
    return flow


def _returning_failed_states(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        log_each_traceback_once()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # the run's outcome: Prefect control flow is BaseException
            failed: State[Any] = Failed(message=one_line_cause(exc), data=exc)
            return cast(R, failed)

    # Prefect validates a run's parameters against the signature it finds here,
    # resolving string annotations in this module's namespace, where the flow's
    # types (DatastorePath...) are unknown: hand it the flow's, resolved.
    run.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return run
