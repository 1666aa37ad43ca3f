"""A step that dies mid-write, or whose upload dies midway, leaves nothing that passes
for a good model, and `trained_models/latest.json` does not move."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import flows.compute.local as local_compute
from flows.compute.base import EnvironmentRef, StepFailedError
from flows.compute.local import COMPLETION_MARKER, LocalCompute
from flows.datastore import DatastoreError, LocalDatastore
from flows.orphans import scratch_root
from flows.plan import data_prep_step, train_step
from flows.registry import ModelVerificationError, promote, verify_model
from tests.conftest import SAMPLE_CSV, TEST_CACHE_DIR, probe_step
from tests.reliability.conftest import latest_json, model_ref

pytestmark = pytest.mark.slow

EARLIER = model_ref("train-earlier", "2026-01-01T00:00:00+00:00")


@pytest.fixture
def promoted_store(store: LocalDatastore) -> LocalDatastore:
    """A datastore whose latest.json already points at an earlier run."""
    assert promote(store, EARLIER)
    return store


def _assert_no_model_and_latest_unmoved(store: LocalDatastore, run_id: str) -> None:
    with pytest.raises(ModelVerificationError):
        verify_model(store, run_id)
    latest = latest_json(store)
    assert latest is not None
    assert latest["run_id"] == EARLIER.run_id


def test_step_killed_while_writing_its_model_uploads_nothing(
    promoted_store: LocalDatastore, environment: EnvironmentRef, tmp_path: Path
) -> None:
    run_id = "train-killed"
    spec = probe_step(
        tmp_path,
        # Half a model and a metadata.json that vouches for it, then SIGKILL: no
        # finally block, no atexit, exactly what the OOM killer does.
        "(out / 'model.skops').write_bytes(b'PK\\x03\\x04 half a zip')\n"
        "(out / 'metadata.json').write_text('{\"model_file\": \"model.skops\"}')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n",
        run_id=run_id,
        output=f"trained_models/{run_id}",
    )
    with pytest.raises(StepFailedError, match="exited with code -9"):
        LocalCompute(promoted_store, TEST_CACHE_DIR).run_step(spec, environment)
    assert promoted_store.list_files(f"trained_models/{run_id}") == []
    _assert_no_model_and_latest_unmoved(promoted_store, run_id)


class _UploadDiesAt:
    """The local datastore, except that uploading `fatal` fails like a dropped connection."""

    def __init__(self, inner: LocalDatastore, fatal: str) -> None:
        self.inner = inner
        self.fatal = fatal

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def upload_file(self, src: Path, path: str, *, overwrite: bool = False) -> None:
        if path.endswith(self.fatal):
            raise DatastoreError(f"connection reset while uploading {path!r}")
        self.inner.upload_file(src, path, overwrite=overwrite)


def _real_steps(store: LocalDatastore, run_id: str) -> tuple:
    store.upload_file(SAMPLE_CSV, "raw/iris.csv")
    prep = data_prep_step(run_id, "raw/iris.csv", "uri_file", "target")
    train = train_step(run_id, prep.output("output_dataframe_path").path, "target", "raw/iris.csv")
    return prep, train


def test_upload_dying_midway_leaves_an_unverifiable_model_and_a_rerun_repairs_it(
    promoted_store: LocalDatastore, environment: EnvironmentRef
) -> None:
    run_id = "train-upload-dies"
    prep, train = _real_steps(promoted_store, run_id)
    LocalCompute(promoted_store, TEST_CACHE_DIR).run_step(prep, environment)
    broken = _UploadDiesAt(promoted_store, "/model.skops")
    with pytest.raises(DatastoreError, match="connection reset"):
        LocalCompute(broken, TEST_CACHE_DIR).run_step(train, environment)  # type: ignore[arg-type]
    # Whatever got through (metadata.json) does not make a model, nor a finished step.
    assert not promoted_store.exists(f"trained_models/{run_id}/model.skops")
    assert not promoted_store.exists(f"trained_models/{run_id}/{COMPLETION_MARKER}")
    _assert_no_model_and_latest_unmoved(promoted_store, run_id)

    again = LocalCompute(promoted_store, TEST_CACHE_DIR).run_step(train, environment)
    assert not again.reused, "a step whose upload failed must run again"
    assert verify_model(promoted_store, run_id).run_id == run_id


def test_real_train_step_sigkilled_mid_run_leaves_no_model(
    promoted_store: LocalDatastore, environment: EnvironmentRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = "train-sigkill"
    prep, train = _real_steps(promoted_store, run_id)
    compute = LocalCompute(promoted_store, TEST_CACHE_DIR)
    compute.run_step(prep, environment)

    started: list[subprocess.Popen[str]] = []
    real_popen = subprocess.Popen

    def recording_popen(*args: object, **kwargs: object) -> subprocess.Popen[str]:
        process = real_popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(process)
        return process

    monkeypatch.setattr(local_compute.subprocess, "Popen", recording_popen)
    outcome: dict[str, object] = {}

    def killer() -> None:
        # Kill as soon as the step has created anything in its output folder: the
        # model's temp file, or the model itself.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if started:
                scratch = scratch_root(TEST_CACHE_DIR)
                outputs = list(scratch.glob(f"*-{train.job_name}-*/outputs/trained_model/*"))
                if outputs:
                    started[0].send_signal(signal.SIGKILL)
                    outcome["killed_after"] = [p.name for p in outputs]
                    return
            time.sleep(0.001)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        compute.run_step(train, environment)
    except StepFailedError as exc:
        outcome["error"] = str(exc)
    thread.join(timeout=5)
    if "error" not in outcome:
        pytest.fail(f"the train step finished before it could be killed ({outcome}); rerun")
    assert "exited with code -9" in str(outcome["error"])
    assert promoted_store.list_files(f"trained_models/{run_id}") == []
    _assert_no_model_and_latest_unmoved(promoted_store, run_id)
