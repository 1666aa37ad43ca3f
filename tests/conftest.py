"""Shared fixtures: isolation from the developer's environment, and a Prefect API."""

from __future__ import annotations

import collections
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# Imported where used, not here: with xdist the controlling process loads this
# file too but runs no test, and these imports (Prefect, scikit-learn, pandas)
# cost it 4-5 CPU s while the workers start up.
if TYPE_CHECKING:
    from flows.compute.base import EnvironmentRef, StepSpec
    from tests.fakes import InProcessFactory
    from tests.prefect_server import PrefectServer

# Session fixtures of the real services: `azurite` and `prefect_server` (which imports services).
pytest_plugins = ["tests.services", "tests.prefect_server"]

REPO_ROOT = Path(__file__).resolve().parents[1]
# The longest modules with slow or integration tests, longest first (as
# measured with `make test`): they go first, so with `make test`'s two xdist
# workers the rest fills the other worker meanwhile, instead of one of them
# running last. The other modules follow, those with the most tests first
# (test_train_flow and test_score_flow, long too, among the first; in `make
# test-fast`, where all come in that order, they start after a few modules that
# do not wait for the session's server to boot). The Makefile passes --no-loadscope-reorder:
# xdist's own order (most tests first) put the weekly cycle, one test of about
# two minutes, last.
LONGEST_FIRST = (
    "tests/integration/test_weekly_cycle.py",
    "tests/integration/test_deployments.py",
    "tests/integration/test_aml_http.py",
    "tests/flows/test_cli_errors.py",
    "tests/flows/compute/test_aml_score_flow.py",
    "tests/reliability/test_azurite_outage.py",
    "tests/flows/test_local_compute.py",
    "tests/reliability/test_flow_resume.py",
    "tests/flows/compute/test_aml_train_flow.py",
)
SAMPLE_CSV = REPO_ROOT / "data" / "sample" / "iris.csv"
# Virtual envs are keyed by content hash, so tests share one cache across runs:
# a warm machine does not rebuild the step environment for every test.
TEST_CACHE_DIR = REPO_ROOT / ".cache" / "test"


@pytest.hookimpl(trylast=True)  # after -m and -k deselected theirs
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the LONGEST_FIRST modules first, then the others, most tests first."""

    from tests.prefect_server import needs_full_server

    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    tests = collections.Counter(module(item) for item in items)
    # Only their slow tests make these modules long (`make test-fast` has none).
    slow = {module(item) for item in items if needs_full_server([item])}
    longest = [name for name in LONGEST_FIRST if name in slow]

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = module(item)
        return (longest.index(name) if name in longest else len(longest)), -tests[name]

    items.sort(key=rank)  # stable: a module's tests keep their order


@pytest.fixture(scope="session", autouse=True)
def _no_developer_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No SOMEMODEL_* variable or `.env` of the developer's leaks into the tests."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("SOMEMODEL_"):
                patch.delenv(name)
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(scope="session", autouse=True)
def _flows_logs_outside_flow_runs_stay_local() -> Iterator[None]:
    """Tests call the backends outside any flow run; their `flows.*` logs are not API logs.

    Prefect would warn on each such line (PREFECT_LOGGING_EXTRA_LOGGERS=flows
    sends them to the API), and warnings are errors here.
    """
    from prefect.context import _temporary_global_settings_context, get_settings_context
    from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings

    # The second context is entered after the first: it takes the updated settings.
    with (
        temporary_settings(updates={PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}),
        _temporary_global_settings_context(get_settings_context()),
    ):
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
def prefect_api(prefect_server: PrefectServer) -> Iterator[PrefectServer]:
    """Flows run in this process report to the session's one real Prefect server.

    What `prefect_test_harness` does, minus starting a second server: the API
    URL and its credentials in the settings (also as the global settings, for contexts copied
    before), and the log and event workers drained before the server goes.
    Tests share the server's database, so they look up their own flow runs by
    id, never count all of them.

    Flow runs in this process send no heartbeats: Prefect's heartbeat thread
    sleeps in 1 s steps and the run's end joins it, 0.5 s of every flow run
    (~1.5 s) on average. Heartbeats are for a server to notice a crashed run,
    which no test of an in-process run waits for; flow runs in the processes
    tests start (a worker's, `flows/train.py`) send them as usual.
    """
    from prefect.context import _temporary_global_settings_context, get_settings_context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import (
        PREFECT_API_AUTH_STRING,
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        temporary_settings,
    )
    from prefect.settings.legacy import Setting

    from tests.prefect_server import AUTH_STRING

    api: dict[Setting, Any] = {
        PREFECT_API_URL: prefect_server.api_url,
        PREFECT_API_AUTH_STRING: AUTH_STRING,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
    }
    with temporary_settings(updates=api):
        with _temporary_global_settings_context(get_settings_context()):
            yield prefect_server
        APILogWorker.drain_all()
        EventsWorker.drain_all()


@pytest.fixture(scope="module")
def in_process_compute() -> Iterator[InProcessFactory]:
    """A compute factory whose steps run in this process (tests/fakes.py), not in a venv.

    Pass it to `backends_of(compute=...)`: flows in that block run on it.
    """
    import flows.tasks
    from tests.fakes import InProcessFactory

    with pytest.MonkeyPatch.context() as patch:
        # Every run builds the wheel (uv build, 1-2 s); here once per module is
        # enough: its reproducibility and use are tested with the local compute.
        patch.setattr(flows.tasks, "build_wheel", functools.cache(flows.tasks.build_wheel))
        yield InProcessFactory()


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
    from flows.compute.base import StepOutput, StepSpec

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
def backends_of(compute: InProcessFactory | None = None, **fields: Any) -> Iterator[Any]:
    """Flows in the block get the backends of `Settings(**fields)`, whatever the environment.

    Yields those settings. This is `flows.backends.use_backends`, the override
    the flows offer instead of environment variables. With `compute`, steps run
    on the compute it makes (a dry run still plans with the planning compute).
    """
    from flows.backends import Backends, make_backends, make_datastore, use_backends
    from flows.settings import Settings

    settings = Settings(**fields)

    def factory(_settings: Settings, logger: Any, dry_run: bool) -> Backends:
        if compute is None or dry_run:
            return make_backends(settings, logger, dry_run)
        datastore = make_datastore(settings)
        return Backends(settings, datastore, compute(settings, datastore, logger))

    with use_backends(factory):
        yield settings
