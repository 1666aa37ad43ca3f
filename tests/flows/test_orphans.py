"""What a killed run leaves behind is reaped by the next one, and nothing else (issue 16, 8).

Real processes (`sleep`) stand for a run and its temporary server: what is
tested is how processes are told apart (pid and start time), so nothing here
is faked. The whole command line, killed and run again, is in
tests/flows/test_cli_errors.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.compute.base import EnvironmentRef
from flows.compute.local import LocalCompute
from flows.datastore import LocalDatastore
from flows.orphans import (
    ProcessId,
    reap_scratch,
    reap_servers,
    record_server,
    scratch_prefix,
    scratch_root,
)
from tests.conftest import probe_step


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def _sleeper(sleepers: list[subprocess.Popen[bytes]]) -> tuple[subprocess.Popen[bytes], ProcessId]:
    process = subprocess.Popen(["sleep", "60"])
    sleepers.append(process)
    identity = ProcessId.of(process.pid)
    assert identity is not None
    return process, identity


def _killed(sleepers: list[subprocess.Popen[bytes]]) -> ProcessId:
    process, identity = _sleeper(sleepers)
    process.kill()
    process.wait()
    return identity


def test_a_process_is_told_apart_from_a_later_one_with_its_pid(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    _, live = _sleeper(sleepers)
    assert live.alive()
    assert not ProcessId(live.pid, str(int(live.started) + 1)).alive()  # the pid, reused
    assert not _killed(sleepers).alive()
    zombie = subprocess.Popen(["true"])
    sleepers.append(zombie)
    identity = ProcessId.of(zombie.pid)
    os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # ended, not yet reaped
    assert identity is None or not identity.alive()


def test_the_server_of_a_killed_owner_is_stopped_and_a_live_owners_is_left(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    server, _ = _sleeper(sleepers)
    _, owner = _sleeper(sleepers)
    record = record_server(tmp_path, server.pid, 8123, owner=owner)
    assert reap_servers(tmp_path) == 0
    assert server.poll() is None
    assert record.exists()

    dead_owner = _killed(sleepers)
    record = record_server(tmp_path, server.pid, 8123, owner=dead_owner)
    assert reap_servers(tmp_path) == 1
    assert server.wait(timeout=10) == -15  # SIGTERM, as Prefect stops its own
    assert not record.exists()


def test_a_pid_reused_by_another_process_is_never_signalled(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    unrelated, now = _sleeper(sleepers)
    owner = _killed(sleepers)
    # The recorded server ended long ago; its pid now names `unrelated`, started later.
    record = tmp_path / "prefect-servers" / f"{unrelated.pid}.json"
    record.parent.mkdir()
    server = {"pid": unrelated.pid, "started": str(int(now.started) - 1)}
    owner_json = {"pid": owner.pid, "started": owner.started}
    record.write_text(json.dumps({"server": server, "owner": owner_json, "port": 8123}))
    assert reap_servers(tmp_path) == 0
    assert unrelated.poll() is None
    assert not record.exists()


def test_scratch_of_a_gone_process_is_removed_and_a_live_ones_kept(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    root = scratch_root(tmp_path)
    mine = root / f"{scratch_prefix('train-1-data-prep')}abcd"
    dead = root / f"{_killed(sleepers).tag}-train-2-data-prep-efgh"
    _, live = _sleeper(sleepers)
    other = root / f"{live.tag}-train-3-data-prep-ijkl"
    reused = root / f"{live.pid}-1-train-4-data-prep-mnop"  # its pid, another start time
    for folder in (mine, dead, other, reused):
        (folder / "inputs").mkdir(parents=True)
    assert reap_scratch(tmp_path) == 2
    assert sorted(p.name for p in root.iterdir()) == sorted([mine.name, other.name])


def test_the_local_compute_names_its_scratch_after_its_process_and_reaps_killed_ones(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    cache = tmp_path / "cache"
    leftover = scratch_root(cache) / f"{_killed(sleepers).tag}-train-2-train-qrst"
    leftover.mkdir(parents=True)
    store = LocalDatastore(tmp_path / "store")
    compute = LocalCompute(store, cache)
    assert not leftover.exists()

    # A step that records where it ran, in an "environment" that is this interpreter.
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").symlink_to(sys.executable)
    spec = probe_step(tmp_path, "(out / 'cwd').write_text(os.getcwd())\n", "run-1", "probes/run-1")
    compute.run_step(spec, EnvironmentRef("probe", "1", str(env), reused=True))
    ran_in = Path(store.root.joinpath("probes/run-1/cwd").read_text())
    assert ran_in.parent.parent == scratch_root(cache)
    assert ran_in.parent.name.startswith(f"{ProcessId.current().tag}-run-1-probe-")
    assert not ran_in.exists()
