"""`python flows/train.py` / `flows/score.py` from any directory run with the checkout's
Prefect settings (prefect.toml), which Prefect itself reads from the working directory only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from prefect.settings import (
    PREFECT_LOGGING_EXTRA_LOGGERS,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)

from flows.cli import PROJECT_PREFECT_TOML, project_prefect_settings, read_prefect_toml
from tests.conftest import REPO_ROOT
from tests.prefect_server import clean_environment

# Runs the script file as `python <script>` does, and reports the Prefect settings the run
# would start with at its first step (the API check), instead of running the flow.
DRIVER = """
import json, logging, runpy, sys
import flows.cli
from prefect.settings import get_current_settings

def report(timeout_seconds):
    s = get_current_settings()
    print(json.dumps({
        "startup_timeout": s.server.ephemeral.startup_timeout_seconds,
        "analytics": s.server.analytics_enabled,
        "extra_loggers": s.logging.extra_loggers,
        "flows_handlers": len(logging.getLogger("flows").handlers),
    }))
    raise SystemExit(0)

flows.cli.check_prefect_api = report
for script in sys.argv[1:]:
    sys.argv = [script, "--input-path", "raw/x.csv"]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit:
        pass
"""


@pytest.mark.slow  # a Python process with Prefect's imports: about 5 s
def test_a_run_from_another_directory_uses_the_projects_prefect_toml(tmp_path: Path) -> None:
    scripts = ["flows/train.py", "flows/score.py"]
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, *(str(REPO_ROOT / script) for script in scripts)],
        cwd=tmp_path,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == len(scripts), result.stdout
    toml = tomllib.loads(PROJECT_PREFECT_TOML.read_text())
    for settings in reports:
        timeout = toml["server"]["ephemeral"]["startup_timeout_seconds"]
        assert settings["startup_timeout"] == timeout
        assert settings["analytics"] is False
        assert settings["extra_loggers"] == ["flows"]
        # The backends' loggers reach the run's log in the API, as from the repository root.
        assert settings["flows_handlers"] >= 1


def test_the_environment_still_wins_over_the_projects_prefect_toml() -> None:
    with (
        temporary_settings(updates={PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 77}),
        project_prefect_settings(),
    ):
        assert PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() == 77
        assert PREFECT_LOGGING_EXTRA_LOGGERS.value() == ["flows"]


def test_prefect_toml_is_read_as_dotted_setting_names() -> None:
    assert read_prefect_toml() == {
        "server.analytics_enabled": False,
        "server.ephemeral.startup_timeout_seconds": 180,
        "logging.extra_loggers": "flows",
    }
    assert read_prefect_toml(Path("/nonexistent/prefect.toml")) == {}
