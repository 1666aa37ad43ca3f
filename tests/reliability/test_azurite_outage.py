"""Azurite stopped in the middle of a train run: the run fails with a clear message;
started again, a new run succeeds, and nothing written before the outage is lost."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from flows.backends import Backends, make_compute, use_backends
from flows.compute.local import LocalCompute
from flows.datastore import DatastoreError
from flows.settings import Settings
from flows.train import SAMPLE_PATH, seed_sample, train
from tests.conftest import TEST_CACHE_DIR
from tests.services import Azurite, blob_datastore

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]


def test_outage_mid_run_fails_clearly_and_the_next_run_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = Azurite(tmp_path / "azurite")  # our own: the session's stays up for other tests
    own.start()
    stack = contextlib.ExitStack()
    try:
        container = "outage"
        for key, value in {
            "DATASTORE": "blob",
            "BLOB_CONTAINER": container,
            "BLOB_CONNECTION_STRING": own.connection_string,
            "CACHE_DIR": str(TEST_CACHE_DIR),
        }.items():
            monkeypatch.setenv(f"SOMEMODEL_{key}", value)

        # The flow's datastore, with the quick-to-give-up retry policy of the tests.
        def backends(settings: Settings, logger: object, dry_run: bool) -> Backends:
            store = blob_datastore(own, container)
            return Backends(settings, store, make_compute(settings, store, None))

        stack.enter_context(use_backends(backends))
        store = blob_datastore(own, container)
        store.create_container()
        seed_sample(Settings())
        first = train(input_path=SAMPLE_PATH)
        before = {path: store.fingerprint(path) for path in store.list_files("")}

        run_step = LocalCompute.run_step

        def outage_before_train(self, spec, environment):  # type: ignore[no-untyped-def]
            if spec.step == "train":
                own.stop()
            return run_step(self, spec, environment)

        monkeypatch.setattr(LocalCompute, "run_step", outage_before_train)
        with pytest.raises(DatastoreError, match=r"could not reach the blob container 'outage'"):
            train(input_path=SAMPLE_PATH, force_rerun=True)
        monkeypatch.setattr(LocalCompute, "run_step", run_step)

        own.start()
        second = train(input_path=SAMPLE_PATH, force_rerun=True)
        assert second.run_id != first.run_id
        assert second.promoted
        latest = store.read_versioned("trained_models/latest.json")
        assert latest is not None
        assert json.loads(latest.text)["run_id"] == second.run_id
        after = {path: store.fingerprint(path) for path in store.list_files("")}
        # Only pointers move: latest.json, and the reuse index (step_cache/, which a
        # forced rerun points at its own outputs). Every data file is still there.
        lost = {p for p in before if p not in after or after[p] != before[p]}
        moved = {
            p for p in lost if p == "trained_models/latest.json" or p.startswith("step_cache/")
        }
        assert lost == moved, f"changed or lost: {lost - moved}"
        assert any(p.startswith(f"trained_models/{first.run_id}/") for p in after)
    finally:
        stack.close()
        own.stop()
