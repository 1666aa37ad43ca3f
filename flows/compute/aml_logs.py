"""Azure ML job logs, streamed into the flow's logger while the runner polls.

The SDK streams a job's logs by writing to `sys.stdout` and blocks until the
job ends. `LogStream` runs it in a thread whose writes alone are routed, line
by line, to the logger: a process-wide `sys.stdout` wrapper sends each
registered thread's text to its own sink and everything else on unchanged.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from azure.ai.ml import MLClient
from azure.ai.ml.exceptions import JobException

LOG_TAIL_LINES = 40


class LogStream:
    """`jobs.stream(name)` in a thread, its output going to the logger line by line.

    The SDK streams by writing to `sys.stdout` and blocks until the job ends;
    the thread lets the caller poll, time out and cancel meanwhile. When the
    job fails, the SDK raises with the job's error, which is kept as `error`.
    When streaming itself fails (a real job's logs are listed from the
    `workspaceartifactstore` datastore, which an identity without a storage
    data-plane role cannot read), the reason is kept as `broken`, not as the
    job's error: the poller carries on alone.
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
        self.broken: str | None = None
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
        except JobException as exc:
            # The SDK's way of saying the job failed: its text carries the job's error.
            self.error = job_error(exc)
            self.log.debug("Log stream of %s ended: %s", self.name, self.error)
        except Exception as exc:  # the poller decides the outcome; this only keeps the reason
            self.broken = job_error(exc)
            self.log.warning(
                "Cannot stream the logs of Azure ML job %s (%s); waiting by polling its status",
                self.name,
                self.broken.splitlines()[0] if self.broken else type(exc).__name__,
            )
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


def job_error(exc: Exception) -> str:
    """The job's error message out of the SDK's `Exception : {json}` text."""
    text = str(getattr(exc, "message", "") or exc).strip()
    _, _, body = text.partition("Exception :")
    try:
        error = json.loads(body.strip()) if body else None
    except json.JSONDecodeError:
        error = None
    return _error_text(error) or text


def run_error(details: Any) -> str | None:
    """The error of a run-history record (`RunDetails`), as `code: message`; None if it has none."""
    error = getattr(details, "error", None)
    if error is None:
        return None
    return _error_text(error.as_dict() if hasattr(error, "as_dict") else error)


def _error_text(error: object) -> str | None:
    if not isinstance(error, dict):
        return None
    inner = error.get("error", error)
    message = inner.get("message") if isinstance(inner, dict) else None
    code = inner.get("code") if isinstance(inner, dict) else None
    if not message:
        return None
    return f"{code}: {message}" if code else str(message)
