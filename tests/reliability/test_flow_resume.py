"""A train flow run killed between steps, restarted with the same run id, resumes.

The flow runs in its own process (as under a Prefect worker) against the test's
Prefect API, and is SIGKILLed at the moment it submits the train step: data prep
finished, train not started, nothing cleaned up. The same run id again reuses
the finished step and runs the rest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from flows.datastore import LocalDatastore
from flows.train import train
from tests.conftest import REPO_ROOT, SAMPLE_CSV, TEST_CACHE_DIR
from tests.prefect_server import AUTH_STRING
from tests.reliability.conftest import latest_json

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

# The flow process dies (SIGKILL: no cleanup at all) when asked to run the train step.
DRIVER = """
import os, signal, sys
from flows.compute.local import LocalCompute
from flows.train import main

run_step = LocalCompute.run_step

def die_before_train(self, spec, environment):
    if spec.step == "train":
        os.kill(os.getpid(), signal.SIGKILL)
    return run_step(self, spec, environment)

LocalCompute.run_step = die_before_train
sys.exit(main(sys.argv[1:]))
"""


def test_killed_flow_resumes_with_the_same_run_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "datastore"
    store = LocalDatastore(root)
    store.upload_file(SAMPLE_CSV, "raw/resume.csv")
    run_id = "train-resume-me"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOMEMODEL_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        PREFECT_API_AUTH_STRING=AUTH_STRING,
        SOMEMODEL_LOCAL_DATASTORE_ROOT=str(root),
        SOMEMODEL_CACHE_DIR=str(TEST_CACHE_DIR),
    )
    killed = subprocess.run(
        [sys.executable, "-c", DRIVER, "--input-path", "raw/resume.csv", "--run-id", run_id],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert store.list_files(f"prepared_dataframes/{run_id}"), "data prep did not finish"
    assert store.list_files(f"trained_models/{run_id}") == []
    assert latest_json(store) is None

    monkeypatch.setenv("SOMEMODEL_LOCAL_DATASTORE_ROOT", str(root))
    monkeypatch.setenv("SOMEMODEL_CACHE_DIR", str(TEST_CACHE_DIR))
    resumed = train(input_path="raw/resume.csv", run_id=run_id)
    assert resumed.run_id == run_id
    assert [(s.step, s.reused) for s in resumed.steps] == [("data_prep", True), ("train", False)]
    assert resumed.model.run_id == run_id
    assert resumed.promoted
    latest = latest_json(store)
    assert latest is not None
    assert latest["run_id"] == run_id
