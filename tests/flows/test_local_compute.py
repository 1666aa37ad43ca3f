"""The local compute backend: cached environments, wheel-only imports, step failures."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from uv import find_uv_bin

from flows.compute.base import (
    EnvironmentRef,
    EnvironmentSpec,
    StepFailedError,
    StepSpec,
)
from flows.compute.local import COMPLETION_MARKER, LocalCompute
from flows.datastore import LocalDatastore
from flows.settings import Settings
from flows.wheel import SOMEMODEL_SOURCE, build_wheel
from tests.conftest import TEST_CACHE_DIR, probe_step

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalDatastore:
    return LocalDatastore(tmp_path_factory.mktemp("datastore"))


@pytest.fixture(scope="module")
def environment(step_environment: EnvironmentRef) -> EnvironmentRef:
    return step_environment


def _probe_step(tmp_path: Path, body: str, run_id: str) -> StepSpec:
    return probe_step(tmp_path, body, run_id, f"probes/{run_id}")


def test_wheel_is_reproducible(tmp_path: Path) -> None:
    first = build_wheel(SOMEMODEL_SOURCE, tmp_path / "a")
    second = build_wheel(SOMEMODEL_SOURCE, tmp_path / "b")
    assert first.sha256 == second.sha256
    assert first.datastore_path == f"wheels/{first.sha256}/{first.filename}"


def test_environment_is_reused_by_version(
    store: LocalDatastore, environment: EnvironmentRef
) -> None:
    wheel = build_wheel(SOMEMODEL_SOURCE, TEST_CACHE_DIR / "wheels")
    settings = Settings()
    spec = EnvironmentSpec("somemodel-env", settings.base_image, settings.pip_packages, wheel)
    again = LocalCompute(store, TEST_CACHE_DIR).prepare_environment(spec)
    assert again.reused
    assert again.version == environment.version


def test_environment_version_changes_with_any_input(environment: EnvironmentRef) -> None:
    wheel = build_wheel(SOMEMODEL_SOURCE, TEST_CACHE_DIR / "wheels")
    base = EnvironmentSpec("e", "img:1", ("pandas==3.1.1",), wheel)
    assert base.version != EnvironmentSpec("e", "img:2", ("pandas==3.1.1",), wheel).version
    assert base.version != EnvironmentSpec("e", "img:1", ("pandas==3.1.0",), wheel).version
    other_wheel = type(wheel)(wheel.local_path, "0" * 64, wheel.datastore_path)
    assert base.version != EnvironmentSpec("e", "img:1", ("pandas==3.1.1",), other_wheel).version
    reordered = EnvironmentSpec("e", "img:1", ("b==1", "a==1"), wheel)
    assert reordered.version == EnvironmentSpec("e", "img:1", ("a==1", "b==1"), wheel).version


def test_step_imports_somemodel_from_the_wheel_not_the_source_tree(
    store: LocalDatastore, environment: EnvironmentRef, tmp_path: Path
) -> None:
    spec = _probe_step(
        tmp_path,
        "import somemodel\n(out / 'where.txt').write_text(somemodel.__file__)\n",
        run_id="probe-wheel",
    )
    LocalCompute(store, TEST_CACHE_DIR).run_step(spec, environment)
    where = (store.root / "probes/probe-wheel/where.txt").read_text()
    assert where.startswith(environment.location)
    assert "site-packages" in where
    assert not where.startswith(str(SOMEMODEL_SOURCE))


def test_step_that_imports_what_the_environment_lacks_fails(
    store: LocalDatastore, environment: EnvironmentRef, tmp_path: Path
) -> None:
    spec = _probe_step(tmp_path, "import prefect\n", run_id="probe-missing")
    with pytest.raises(StepFailedError, match="No module named 'prefect'"):
        LocalCompute(store, TEST_CACHE_DIR).run_step(spec, environment)


def test_step_gets_no_secrets_from_the_environment(
    store: LocalDatastore,
    environment: EnvironmentRef,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOMEMODEL_BLOB_CONNECTION_STRING", "AccountKey=leaky")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "leaky")
    spec = _probe_step(
        tmp_path,
        "import os, json\n(out / 'env.json').write_text(json.dumps(dict(os.environ)))\n",
        run_id="probe-env",
    )
    LocalCompute(store, TEST_CACHE_DIR).run_step(spec, environment)
    seen = (store.root / "probes/probe-env/env.json").read_text()
    assert "leaky" not in seen
    assert "PYTHONPATH" not in seen


def test_failed_step_raises_with_its_output_tail_and_writes_nothing(
    store: LocalDatastore, environment: EnvironmentRef, tmp_path: Path
) -> None:
    spec = _probe_step(
        tmp_path,
        "(out / 'half.bin').write_text('partial')\n"
        "print('error: the input is bad in a specific way', file=sys.stderr)\n"
        "sys.exit(2)\n",
        run_id="probe-fail",
    )
    with pytest.raises(StepFailedError, match="exited with code 2") as info:
        LocalCompute(store, TEST_CACHE_DIR).run_step(spec, environment)
    assert "error: the input is bad in a specific way" in str(info.value)
    assert store.list_files("probes/probe-fail") == []


def test_step_timeout_kills_the_process(
    store: LocalDatastore, environment: EnvironmentRef, tmp_path: Path
) -> None:
    spec = _probe_step(tmp_path, "import time\ntime.sleep(60)\n", run_id="probe-slow")
    compute = LocalCompute(store, TEST_CACHE_DIR, step_timeout_seconds=1)
    with pytest.raises(StepFailedError, match="timed out after 1 s"):
        compute.run_step(spec, environment)


def test_completed_step_is_not_run_again(
    store: LocalDatastore, environment: EnvironmentRef, tmp_path: Path
) -> None:
    spec = _probe_step(
        tmp_path,
        "import time\n(out / 'stamp.txt').write_text(str(time.time_ns()))\n",
        run_id="probe-once",
    )
    compute = LocalCompute(store, TEST_CACHE_DIR)
    first = compute.run_step(spec, environment)
    stamp = (store.root / "probes/probe-once/stamp.txt").read_text()
    second = compute.run_step(spec, environment)
    assert not first.reused
    assert second.reused
    assert (store.root / "probes/probe-once/stamp.txt").read_text() == stamp
    assert store.exists(f"probes/probe-once/{COMPLETION_MARKER}")


def test_fan_out_runs_steps_concurrently_in_spec_order(
    store: LocalDatastore, environment: EnvironmentRef, tmp_path: Path
) -> None:
    # A barrier: each step says it has started, then waits for all three. Run one
    # after another, the first would wait in vain and fail: no timing involved.
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    body = (
        f"barrier = pathlib.Path({str(barrier)!r})\n"
        "(barrier / out.parents[1].name).touch()\n"
        "deadline = time.monotonic() + 120\n"
        "while len(list(barrier.iterdir())) < 3:\n"
        "    if time.monotonic() > deadline:\n"
        "        sys.exit('the other steps never started: not run side by side')\n"
        "    time.sleep(0.05)\n"
        "(out / 'done').touch()\n"
    )
    specs = [_probe_step(tmp_path, body, f"fan-out-{k}") for k in range(3)]
    compute = LocalCompute(store, TEST_CACHE_DIR, max_parallel=3)
    results = compute.run_steps(specs, environment)
    assert [r.job_name for r in results] == [s.job_name for s in specs]
    assert all(r.status == "Completed" for r in results)
    assert all(store.exists(f"probes/fan-out-{k}/done") for k in range(3))


def test_fan_out_failure_stops_the_other_steps(
    store: LocalDatastore, environment: EnvironmentRef, tmp_path: Path
) -> None:
    slow = _probe_step(tmp_path, "time.sleep(60)\n", "fan-out-slow")
    bad = _probe_step(tmp_path, "time.sleep(1)\nsys.exit('shard broke')\n", "fan-out-bad")
    waiting = _probe_step(tmp_path, "pass\n", "fan-out-waiting")
    compute = LocalCompute(store, TEST_CACHE_DIR, max_parallel=2)
    started = time.monotonic()
    with pytest.raises(
        StepFailedError, match=r"(?s)fan-out-bad-probe exited with code 1.*shard broke"
    ):
        compute.run_steps([slow, bad, waiting], environment)
    assert time.monotonic() - started < 30  # the 60 s step was killed
    assert not store.list_files("probes/fan-out-slow")
    # The compute works again afterwards, and a lone failure is not "stopped".
    with pytest.raises(StepFailedError, match="exited with code 1"):
        compute.run_step(bad, environment)


def _real_environment(tmp_path: Path) -> tuple[LocalCompute, EnvironmentSpec]:
    """A compute with its own cache, and the real step environment's spec (built wheel, pins)."""
    store = LocalDatastore(tmp_path / "store")
    wheel = build_wheel(SOMEMODEL_SOURCE, TEST_CACHE_DIR / "wheels")
    store.upload_file(wheel.local_path, wheel.datastore_path)
    settings = Settings()
    spec = EnvironmentSpec("heal-env", settings.base_image, settings.pip_packages, wheel)
    return LocalCompute(store, tmp_path / "cache"), spec


def test_a_ready_environment_missing_a_package_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    compute, spec = _real_environment(tmp_path)
    built = compute.prepare_environment(spec)
    python = f"{built.location}/bin/python"
    uninstall = [find_uv_bin(), "pip", "uninstall", "--quiet", "--python", python, "joblib"]
    subprocess.run(uninstall, check=True)
    again = compute.prepare_environment(spec)
    assert not again.reused
    assert "joblib is not installed" in caplog.text
    subprocess.run([python, "-c", "import joblib, somemodel"], check=True)
    assert compute.prepare_environment(spec).reused


def test_a_ready_environment_whose_python_is_gone_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    compute, spec = _real_environment(tmp_path)
    built = compute.prepare_environment(spec)
    (Path(built.location) / "bin" / "python").unlink()
    assert not compute.prepare_environment(spec).reused
    assert "does not run" in caplog.text
