"""A failed `python flows/train.py` / `python flows/score.py` run, as a person sees it.

docs/score.md promises one line: the default output ends with the cause and
where to look, without tracebacks (they go to the run's log, or to the
console with --verbose). Each command runs in its own process, as people run it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


@pytest.mark.parametrize(
    ("argv", "cause"),
    [
        (["flows/train.py", "--input-path", "raw/missing.csv"], "raw/missing.csv"),
        (["flows/score.py", "--input-path", "raw/missing.csv"], "raw/missing.csv"),
    ],
    ids=["train", "score"],
)
def test_a_failed_run_ends_withone_line_cause_and_no_traceback(
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
    assert "prefect flow-run logs" in lines[-1]


def test_verbose_keeps_the_tracebacks(prefect_server: PrefectServer, tmp_path: Path) -> None:
    result = _run(
        prefect_server, tmp_path, "flows/train.py", "--input-path", "raw/missing.csv", "--verbose"
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert any(line.startswith("error: ") for line in result.stderr.splitlines())


def test_a_step_failure_keeps_the_steps_own_error_on_the_line() -> None:
    from flows.cli import one_line_cause
    from flows.compute.base import StepFailedError

    failure = StepFailedError(
        "step score-1-score exited with code 1. Last output:\n"
        "Scoring 1 file\nerror: x.csv: missing feature columns ['f2']\n"
    )
    assert one_line_cause(failure) == (
        "step score-1-score exited with code 1. Last output: "
        "error: x.csv: missing feature columns ['f2']"
    )


@pytest.mark.parametrize("command", ["flows/train.py", "flows/score.py"])
def test_a_prefect_api_that_never_answers_fails_in_bounded_time(
    tmp_path: Path, command: str
) -> None:
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
            [sys.executable, command],
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
