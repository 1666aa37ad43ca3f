"""Shared fixtures: isolation from the developer's environment, and a Prefect API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from flows.compute.base import EnvironmentRef, StepOutput, StepSpec
from tests.prefect_server import prefect_server  # noqa: F401  (session fixture: a real server)
from tests.services import azurite  # noqa: F401  (session fixture: a real Azurite)

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_CSV = REPO_ROOT / "data" / "sample" / "iris.csv"
# Virtual envs are keyed by content hash, so tests share one cache across runs:
# a warm machine does not rebuild the step environment for every test.
TEST_CACHE_DIR = REPO_ROOT / ".cache" / "test"


@pytest.fixture(scope="session", autouse=True)
def _no_developer_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No SOMEMODEL_* variable or `.env` of the developer's leaks into the tests."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("SOMEMODEL_"):
                patch.delenv(name)
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(autouse=True)
def _own_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test gets an empty working directory, so a `.env` it writes stays its own."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Settings for the local datastore in a temp folder; returns the datastore root."""
    root = tmp_path / "datastore"
    monkeypatch.setenv("SOMEMODEL_LOCAL_DATASTORE_ROOT", str(root))
    monkeypatch.setenv("SOMEMODEL_CACHE_DIR", str(TEST_CACHE_DIR))
    return root


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A throwaway Prefect server and database for flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    # A fresh SQLite database takes 20-30 s to migrate on a 2-core machine.
    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def step_environment(tmp_path_factory: pytest.TempPathFactory) -> EnvironmentRef:
    """The real step environment: the built wheel and the pinned packages in a venv.

    Keyed by content hash under TEST_CACHE_DIR, so a warm machine builds nothing.
    """
    from flows.compute.base import EnvironmentSpec
    from flows.compute.local import LocalCompute
    from flows.datastore import LocalDatastore
    from flows.settings import Settings
    from flows.wheel import SOMEMODEL_SOURCE, build_wheel

    store = LocalDatastore(tmp_path_factory.mktemp("wheel-store"))
    wheel = build_wheel(SOMEMODEL_SOURCE, TEST_CACHE_DIR / "wheels")
    store.upload_file(wheel.local_path, wheel.datastore_path)
    settings = Settings()
    spec = EnvironmentSpec("somemodel-env", settings.base_image, settings.pip_packages, wheel)
    return LocalCompute(store, TEST_CACHE_DIR).prepare_environment(spec)


def probe_step(tmp_path: Path, body: str, run_id: str, output: str) -> StepSpec:
    """A step whose script runs `body` with `out` (a Path) as its only output folder."""
    code = tmp_path / f"probe-{run_id}"
    code.mkdir(exist_ok=True)
    (code / "probe.py").write_text(
        "import argparse, os, pathlib, signal, sys, time\n"
        "parser = argparse.ArgumentParser()\n"
        "parser.add_argument('--out')\n"
        "out = pathlib.Path(parser.parse_args().out)\n" + body
    )
    return StepSpec(
        step="probe",
        run_id=run_id,
        code_dir=code,
        script="probe.py",
        inputs=(),
        outputs=(StepOutput("out", output),),
    )


@contextmanager
def backends_of(**fields: Any) -> Iterator[Any]:
    """Flows in the block get the backends of `Settings(**fields)`, whatever the environment.

    Yields those settings. This is `flows.backends.use_backends`, the override
    the flows offer instead of environment variables.
    """
    from flows.backends import make_backends, use_backends
    from flows.settings import Settings

    settings = Settings(**fields)
    with use_backends(lambda _settings, logger, dry_run: make_backends(settings, logger, dry_run)):
        yield settings
