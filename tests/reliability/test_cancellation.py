"""Cancelling or terminating a run stops the local step's subprocess.

Prefect cancels a flow run by sending its process SIGTERM, which the engine turns
into a `TerminationSignal` raised in the main thread; a task runner thread can
also be interrupted. Either way the step's child process must not outlive it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from prefect.exceptions import TerminationSignal
from prefect.utilities.engine import _prefect_sigterm_handler

from flows.compute.base import EnvironmentRef
from flows.compute.local import COMPLETION_MARKER, LocalCompute
from flows.datastore import LocalDatastore
from tests.conftest import TEST_CACHE_DIR, probe_step

pytestmark = pytest.mark.slow


def _long_step(tmp_path: Path, run_id: str, pid_file: Path) -> object:
    return probe_step(
        tmp_path,
        f"pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))\n"
        "for i in range(6000):\n"
        "    print('working', i, flush=True)\n"
        "    time.sleep(0.05)\n"
        "(out / 'done.txt').write_text('finished')\n",
        run_id=run_id,
        output=f"probes/{run_id}",
    )


def _wait_for_pid(pid_file: Path) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if pid_file.is_file() and pid_file.read_text():
            return int(pid_file.read_text())
        time.sleep(0.02)
    raise TimeoutError(f"the probe step did not start: {pid_file} never appeared")


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_of_the_flow_process_kills_the_step_child(
    store: LocalDatastore, environment: EnvironmentRef, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    spec = _long_step(tmp_path, "probe-sigterm", pid_file)
    seen: dict[str, int] = {}

    def terminate_when_running() -> None:
        seen["child"] = _wait_for_pid(pid_file)
        assert _is_alive(seen["child"])
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, _prefect_sigterm_handler)
    terminator = threading.Thread(target=terminate_when_running, daemon=True)
    terminator.start()
    try:
        with pytest.raises(TerminationSignal):
            LocalCompute(store, TEST_CACHE_DIR).run_step(spec, environment)  # type: ignore[arg-type]
    finally:
        signal.signal(signal.SIGTERM, previous)
        terminator.join(timeout=5)
    assert not _is_alive(seen["child"]), "the step process outlived the cancelled run"
    assert store.list_files("probes/probe-sigterm") == []
    assert not store.exists(f"probes/probe-sigterm/{COMPLETION_MARKER}")


def test_interrupting_the_task_thread_kills_the_step_child(
    store: LocalDatastore, environment: EnvironmentRef, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    spec = _long_step(tmp_path, "probe-interrupt", pid_file)
    raised: list[BaseException] = []

    def task() -> None:
        try:
            LocalCompute(store, TEST_CACHE_DIR).run_step(spec, environment)  # type: ignore[arg-type]
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=task, daemon=True)
    worker.start()
    child = _wait_for_pid(pid_file)
    # What a timeout or cancellation of a task in a worker thread does: an
    # exception delivered asynchronously into that thread.
    delivered = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(worker.ident or 0), ctypes.py_object(KeyboardInterrupt)
    )
    assert delivered == 1
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert [type(e) for e in raised] == [KeyboardInterrupt]
    assert not _is_alive(child), "the step process outlived the interrupted task"
    assert store.list_files("probes/probe-interrupt") == []
