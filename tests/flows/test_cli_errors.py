"""A failed `python flows/train.py` / `python flows/score.py` run, as a person sees it.

docs/score.md promises one line: the default output ends with the cause and
where to look, without tracebacks (they go to the run's log, or to the
console with --verbose). Each command runs in its own process, as people run it,
so those tests are `slow` (about 10 s each: a Python start-up with Prefect's
imports); the fast tier keeps the pure ones.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.orphans import ProcessId, scratch_root, servers_root
from tests.conftest import REPO_ROOT
from tests.prefect_server import PrefectServer, clean_environment


def _run(server: PrefectServer, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = server.env(
        {
            "SOMEMODEL_LOCAL_DATASTORE_ROOT": str(tmp_path / "datastore"),
            "SOMEMODEL_CACHE_DIR": str(tmp_path / "cache"),
        }
    )
    return subprocess.run(
        [sys.executable, *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "cause"),
    [
        # score.py, without a server: test_a_killed_run_leaves_nothing_after_the_next_run
        (["flows/train.py", "--input-path", "raw/missing.csv"], "raw/missing.csv"),
    ],
    ids=["train"],
)
def test_a_failed_run_ends_with_one_line_cause_and_no_traceback(
    prefect_server: PrefectServer, tmp_path: Path, argv: list[str], cause: str
) -> None:
    result = _run(prefect_server, tmp_path, *argv)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    lines = result.stderr.strip().splitlines()
    error = [line for line in lines if line.startswith("error: ")]
    assert len(error) == 1
    assert cause in error[0]
    assert lines.index(error[0]) >= len(lines) - 2  # only "where to look" after the cause
    assert "--verbose" in lines[-1]
    assert "prefect flow-run logs" in lines[-1]  # the server outlives the command
    logs = list((tmp_path / "cache" / "logs").iterdir())
    assert f"full log and traceback: {logs[0]} or prefect flow-run logs" in lines[-1]


@pytest.mark.slow
def test_verbose_keeps_the_tracebacks(prefect_server: PrefectServer, tmp_path: Path) -> None:
    result = _run(
        prefect_server, tmp_path, "flows/train.py", "--input-path", "raw/missing.csv", "--verbose"
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert any(line.startswith("error: ") for line in result.stderr.splitlines())


def test_a_step_failure_keeps_the_steps_own_error_on_the_line() -> None:
    from flows.compute.base import StepFailedError
    from flows.failures import one_line_cause

    failure = StepFailedError(
        "step score-1-score exited with code 1. Last output:\n"
        "Scoring 1 file\nerror: x.csv: missing feature columns ['f2']\n"
    )
    assert one_line_cause(failure) == (
        "step score-1-score exited with code 1. Last output: "
        "error: x.csv: missing feature columns ['f2']"
    )


@pytest.mark.slow
def test_a_prefect_api_that_never_answers_fails_in_bounded_time(tmp_path: Path) -> None:
    """`flows/train.py` here; the killed-run test below checks `flows/score.py` the same way."""
    with socket.socket() as silent:
        # Listening but never accepting: the kernel completes the handshake, then nothing.
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        api_url = f"http://127.0.0.1:{silent.getsockname()[1]}/api"
        env = clean_environment(
            {
                "PREFECT_API_URL": api_url,
                "PREFECT_HOME": str(tmp_path / "prefect"),
                "SOMEMODEL_LOCAL_DATASTORE_ROOT": str(tmp_path / "datastore"),
                "SOMEMODEL_CACHE_DIR": str(tmp_path / "cache"),
                "SOMEMODEL_API_CHECK_TIMEOUT_SECONDS": "3",
            }
        )
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "flows/train.py"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert time.monotonic() - started < 60
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ")
    assert api_url in lines[-1]
    assert "did not answer within 3 s" in lines[-1]
    assert "PREFECT_API_URL" in lines[-1]


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not after {timeout:.0f} s: {what}")
        time.sleep(0.1)


@pytest.mark.slow
def test_a_killed_run_leaves_nothing_after_the_next_run(tmp_path: Path) -> None:
    """kill -9 of a run without PREFECT_API_URL leaves its temporary server and scratch
    running; the next run, whatever it then does, first stops and removes them.

    The next run here fails fast on an API that never answers: the clean-up
    comes before anything else, and a second server start would cost ~20 s.
    """
    cache = tmp_path / "cache"
    env = clean_environment(
        {
            "PREFECT_HOME": str(tmp_path / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # The server left running would migrate a fresh database meanwhile: CPU the
            # next run needs on a small machine, and nothing this test looks at.
            "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
            "SOMEMODEL_LOCAL_DATASTORE_ROOT": str(tmp_path / "datastore"),
            "SOMEMODEL_CACHE_DIR": str(cache),
        }
    )
    killed = subprocess.Popen(
        [sys.executable, "flows/train.py"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server: ProcessId | None = None
    try:
        _wait_for(lambda: any(servers_root(cache).glob("*.json")), "the server recorded")
        record = next(servers_root(cache).glob("*.json"))
        server = ProcessId.of(int(record.stem))
        owner = ProcessId.of(killed.pid)
        assert server is not None
        assert owner is not None
        # The scratch folder of a step it ran, named as its local compute names them
        # (no step runs here: that would need the step environment built).
        scratch = scratch_root(cache) / f"{owner.tag}-train-1-data-prep-abcd"
        (scratch / "inputs").mkdir(parents=True)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert server.alive()  # what a SIGKILL leaves behind

        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen(16)
            result = subprocess.run(
                [sys.executable, "flows/score.py"],
                cwd=REPO_ROOT,
                env={
                    **env,
                    "PREFECT_API_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/api",
                    "SOMEMODEL_API_CHECK_TIMEOUT_SECONDS": "1",
                },
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
        assert result.returncode == 1
        assert not server.alive(), result.stderr
        assert not scratch.exists()
        assert not record.exists()
        assert f"Stopping the temporary Prefect server (pid {server.pid}" in result.stderr
        assert "Warning" not in result.stderr  # e.g. Prefect's about logs without a run
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ")
        assert "did not answer within 1 s" in last
        assert "PREFECT_API_URL" in last
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.wait()
        if server is not None and server.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.pid, signal.SIGKILL)


def test_the_last_lines_are_the_cause_and_a_log_file_once_the_server_has_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Completed

    import flows.cli as cli

    @contextlib.contextmanager
    def server(cache_dir: Path) -> Iterator[None]:
        # Stands in for Prefect's temporary server, which logs this line as it stops.
        try:
            yield
        finally:
            print("INFO | prefect - Stopping temporary server", file=sys.stderr)

    def failing() -> Any:
        raise FileNotFoundError("input 'raw/x.csv' does not exist\nmore detail")

    monkeypatch.setattr(cli, "temporary_server", server)
    monkeypatch.setenv("SOMEMODEL_CACHE_DIR", str(tmp_path / "cache"))
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # no server outlives the run
        assert cli.run_flow(failing, verbose=False, command="train") == (False, None)
        lines = capsys.readouterr().err.strip().splitlines()
        assert lines[-3].endswith("Stopping temporary server")
        assert lines[-2] == "error: input 'raw/x.csv' does not exist more detail"
        assert "prefect flow-run logs" not in lines[-1]
        assert lines[-1].endswith(", or run again with --verbose)")
        log = Path(lines[-1].split("full log and traceback: ")[1].split(", or run")[0])
        assert log.parent == tmp_path / "cache" / "logs"
        assert "Traceback" in log.read_text()
        assert "FileNotFoundError: input 'raw/x.csv' does not exist" in log.read_text()

        # A run that succeeds keeps no log file.
        assert cli.run_flow(lambda: Completed(data=7), verbose=False, command="train") == (True, 7)
        assert list(log.parent.iterdir()) == [log]


def test_an_api_that_refuses_the_credentials_names_the_setting(
    prefect_server: PrefectServer,
) -> None:
    """The session's server runs with an auth string, as documented (docs/api.md)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from flows.cli import PrefectApiCredentialsError, check_prefect_api
    from tests.prefect_server import AUTH_STRING

    for wrong in (None, "somemodel:not-the-password"):
        updates = {PREFECT_API_URL: prefect_server.api_url, PREFECT_API_AUTH_STRING: wrong}
        with (
            temporary_settings(updates=updates),
            pytest.raises(PrefectApiCredentialsError, match="refused the credentials") as refused,
        ):
            check_prefect_api(30)
        assert "set PREFECT_API_AUTH_STRING to the server's PREFECT_SERVER_API_AUTH_STRING" in str(
            refused.value
        )
        assert "not-the-password" not in str(refused.value)
    right = {PREFECT_API_URL: prefect_server.api_url, PREFECT_API_AUTH_STRING: AUTH_STRING}
    with temporary_settings(updates=right):
        check_prefect_api(30)
