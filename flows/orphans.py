"""What a killed run leaves on this machine, and how the next run reaps it.

A run killed with SIGKILL cannot clean up after itself: the temporary Prefect
server a command-line run started keeps running (a port, ~250 MB), and the
scratch folder of the step it was running stays under the cache. So both are
named after the process that owns them, by pid and start time (a pid reused
by another process has another start time), and the next run removes those
whose owner is gone:

- `{cache}/prefect-servers/{server pid}.json` records a temporary server
  (its pid and start time, its owner's, its port); written as the server
  process starts, removed when it is stopped;
- `{cache}/scratch/{owner pid}-{owner start}-{job}-XXXX/` is a step's
  scratch folder (its code, inputs and outputs).

A live owner's server and scratch are never touched, and a server is only
signalled while its pid still names the process recorded. Start times come
from /proc (Linux: CI, development, Azure ML nodes); where there is no /proc,
a pid that exists counts as its owner, and no server is signalled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

SERVERS_DIR = "prefect-servers"
SCRATCH_DIR = "scratch"
STOP_WAIT_SECONDS = 3.0

_SCRATCH_NAME = re.compile(r"^(\d+)-(\d*)-")

logger = logging.getLogger(__name__)


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (the state) on; None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2, the command name, is in parentheses and may hold spaces.
    return text.rsplit(")", 1)[1].split()


def _has_proc() -> bool:
    return Path("/proc/self/stat").exists()


@dataclass(frozen=True)
class ProcessId:
    """A process, told apart from a later one with the same pid by its start time."""

    pid: int
    # Field 22 of /proc/<pid>/stat (clock ticks after boot); "" without /proc.
    started: str

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        """The process `pid` now names, or None when there is none (or only its zombie)."""
        if not _has_proc():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
            return cls(pid, "")
        fields = _stat_fields(pid)
        if fields is None or fields[0] == "Z":
            return None
        return cls(pid, fields[19])

    @classmethod
    def current(cls) -> ProcessId:
        """This process."""
        return cls.of(os.getpid()) or cls(os.getpid(), "")

    def alive(self) -> bool:
        """True while this very process runs (a zombie has ended)."""
        now = ProcessId.of(self.pid)
        return now is not None and now.started == self.started

    @property
    def tag(self) -> str:
        """`{pid}-{start time}`, as names of the files and folders it owns begin."""
        return f"{self.pid}-{self.started}"


# --- scratch folders ----------------------------------------------------------------------


def scratch_root(cache_dir: Path) -> Path:
    """The folder holding the steps' scratch folders."""
    return cache_dir / SCRATCH_DIR


def scratch_prefix(job_name: str) -> str:
    """The name prefix of a scratch folder this process makes for `job_name`."""
    return f"{ProcessId.current().tag}-{job_name}-"


def reap_scratch(cache_dir: Path, log: logging.Logger | logging.LoggerAdapter = logger) -> int:
    """Remove the scratch folders whose owner process is gone; returns how many."""
    root = scratch_root(cache_dir)
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return 0
    removed = 0
    for entry in entries:
        match = _SCRATCH_NAME.match(entry.name)
        if match is None or not entry.is_dir():
            continue
        owner = ProcessId(int(match[1]), match[2])
        if owner.alive():
            continue
        shutil.rmtree(entry, ignore_errors=True)
        log.info("Removed %s: the process %d that used it is gone", entry, owner.pid)
        removed += 1
    return removed


# --- temporary Prefect servers ------------------------------------------------------------


def servers_root(cache_dir: Path) -> Path:
    """The folder of the records of temporary Prefect servers started by command-line runs."""
    return cache_dir / SERVERS_DIR


def record_server(
    cache_dir: Path, pid: int, port: int | None, owner: ProcessId | None = None
) -> Path:
    """Record the temporary server process `pid`, owned by `owner` (default: this process);
    returns the record.

    Call it right after the server process starts: a kill of this process
    after that point leaves a record the next run finds.
    """
    server = ProcessId.of(pid) or ProcessId(pid, "")
    owner = owner or ProcessId.current()
    root = servers_root(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{pid}.json"
    record = {
        "server": {"pid": server.pid, "started": server.started},
        "owner": {"pid": owner.pid, "started": owner.started},
        "port": port,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(path)
    return path


def _read_record(path: Path) -> tuple[ProcessId, ProcessId, object] | None:
    try:
        record = json.loads(path.read_text())
        server = ProcessId(int(record["server"]["pid"]), str(record["server"]["started"]))
        owner = ProcessId(int(record["owner"]["pid"]), str(record["owner"]["started"]))
        return server, owner, record.get("port")
    except (OSError, ValueError, KeyError, TypeError):
        return None


def reap_servers(cache_dir: Path, log: logging.Logger | logging.LoggerAdapter = logger) -> int:
    """Stop the recorded temporary servers whose owner is gone; returns how many were stopped.

    A record whose server has already gone is removed; one whose owner still
    runs is left alone.
    """
    stopped = 0
    for path in sorted(servers_root(cache_dir).glob("*.json")):
        read = _read_record(path)
        if read is None:
            log.warning("Removing %s: it is not a server record", path)
            path.unlink(missing_ok=True)
            continue
        server, owner, port = read
        if owner.alive():
            continue
        if server.alive():
            if not server.started:
                log.warning(
                    "Process %d may be the temporary Prefect server (port %s) that the killed "
                    "process %d started; without /proc it cannot be told apart from another "
                    "process with that pid, so it is left running",
                    server.pid,
                    port,
                    owner.pid,
                )
            else:
                log.warning(
                    "Stopping the temporary Prefect server (pid %d, port %s) that process %d "
                    "started and left behind when it was killed",
                    server.pid,
                    port,
                    owner.pid,
                )
                _stop(server)
                stopped += 1
        path.unlink(missing_ok=True)
    return stopped


def _stop(process: ProcessId) -> None:
    """SIGTERM `process`, then SIGKILL it if it still runs after STOP_WAIT_SECONDS."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not process.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while process.alive() and time.monotonic() < deadline:
            time.sleep(0.05)


def reap_orphans(cache_dir: Path, log: logging.Logger | logging.LoggerAdapter = logger) -> None:
    """Stop the temporary servers and remove the scratch folders of killed runs."""
    reap_servers(cache_dir, log)
    reap_scratch(cache_dir, log)
