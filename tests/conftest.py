"""Shared fixtures: isolation from the developer's environment, and a Prefect API."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

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
