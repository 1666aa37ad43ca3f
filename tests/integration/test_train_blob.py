"""The whole train flow on the local compute and a blob container in a real Azurite."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.blob import ContainerClient

from deployments.blob import main as blob_setup
from flows.datastore import DatastoreError, DatastoreNotFoundError
from flows.datastore.base import sha256_of_file
from flows.datastore.blob import BlobDatastore
from flows.registry import ModelRef, promote
from flows.settings import Settings
from flows.summary import TrainSummary
from flows.train import SAMPLE_PATH, main, seed_sample, train
from tests.conftest import SAMPLE_CSV, TEST_CACHE_DIR
from tests.services import ACCOUNT_KEY, WRONG_KEY, Azurite

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


@pytest.fixture(scope="module")
def container(azurite: Azurite) -> Iterator[ContainerClient]:
    """A fresh container set up by the CLI, the sample seeded, and the env to use it."""
    name = azurite.new_container_name("train")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOMEMODEL_DATASTORE", "blob")
        patch.setenv("SOMEMODEL_BLOB_CONTAINER", name)
        patch.setenv("SOMEMODEL_BLOB_CONNECTION_STRING", azurite.connection_string)
        patch.setenv("SOMEMODEL_CACHE_DIR", str(TEST_CACHE_DIR))
        assert blob_setup(["--create-container"]) == 0
        seed_sample(Settings())
        yield ContainerClient.from_connection_string(azurite.connection_string, name)


@pytest.fixture(scope="module")
def first_run(container: ContainerClient) -> TrainSummary:
    return train(input_path=SAMPLE_PATH)


@pytest.fixture
def store(container: ContainerClient) -> BlobDatastore:
    return BlobDatastore.from_settings(Settings())


def _blob_json(container: ContainerClient, name: str) -> dict:
    return json.loads(container.get_blob_client(name).download_blob().readall())


def test_trains_from_blob_and_writes_the_model_blob(
    container: ContainerClient, first_run: TrainSummary, azurite: Azurite
) -> None:
    run_id = first_run.model.run_id
    names = {b.name for b in container.list_blobs(name_starts_with=f"trained_models/{run_id}/")}
    assert {f"trained_models/{run_id}/model.skops", f"trained_models/{run_id}/metadata.json"} <= (
        names
    )
    metadata = _blob_json(container, f"trained_models/{run_id}/metadata.json")
    assert metadata["run_id"] == run_id
    assert metadata["input_path"] == SAMPLE_PATH
    assert metadata["metrics"]["accuracy"] > 0.8
    model_blob = container.get_blob_client(f"trained_models/{run_id}/model.skops")
    model_bytes = model_blob.download_blob().readall()
    assert hashlib.sha256(model_bytes).hexdigest() == metadata["model_sha256"]
    assert _blob_json(container, "trained_models/latest.json")["run_id"] == run_id
    assert first_run.promoted
    assert first_run.model.uri == (
        f"{azurite.blob_endpoint}/{container.container_name}/trained_models/{run_id}/model.skops"
    )
    assert any(b.name.endswith(".whl") for b in container.list_blobs(name_starts_with="wheels/"))
    assert list(container.list_blobs(name_starts_with=f"prepared_dataframes/{run_id}/"))


# promote() runs outside a flow here, so Prefect's API handler has no run to log to.
@pytest.mark.filterwarnings("ignore:Logger 'flows.registry' attempted to send logs")
def test_racing_promotions_keep_latest_valid_and_the_newest_wins(
    store: BlobDatastore, first_run: TrainSummary
) -> None:
    # Newer than the first run, and never more than seconds ahead of the clock: a
    # pointer minutes in the future is suspect (a skewed clock) and gets replaced.
    base = datetime.now(UTC)
    reads: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            current = store.read_versioned("trained_models/latest.json")
            assert current is not None
            reads.append(current.text)

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        for round_ in range(5):
            older, newer = (
                replace(
                    first_run.model,
                    run_id=f"race-{round_}-{which}",
                    created_at=(base + timedelta(seconds=2 * round_ + offset)).isoformat(),
                )
                for which, offset in (("older", 0), ("newer", 1))
            )
            barrier = threading.Barrier(2)
            results: dict[str, bool] = {}

            def run(model: ModelRef) -> None:
                barrier.wait()
                results[model.run_id] = promote(store, model)

            threads = [threading.Thread(target=run, args=(m,)) for m in (older, newer)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert results[newer.run_id] is True
            latest = json.loads(store.read_versioned("trained_models/latest.json").text)  # type: ignore[union-attr]
            assert latest["run_id"] == newer.run_id
            assert promote(store, older) is False
    finally:
        done.set()
        watcher.join()
    assert reads
    for text in reads:
        assert "run_id" in json.loads(text)


def test_missing_input_blob_fails_before_any_step(
    container: ContainerClient, first_run: TrainSummary
) -> None:
    before = {b.name for b in container.list_blobs(name_starts_with="prepared_dataframes/")}
    with pytest.raises(DatastoreNotFoundError, match=r"'raw/nope\.csv'.*blob container"):
        train(input_path="raw/nope.csv")
    after = {b.name for b in container.list_blobs(name_starts_with="prepared_dataframes/")}
    assert after == before


def test_missing_container_is_named(
    container: ContainerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOMEMODEL_BLOB_CONTAINER", "not-created")
    with pytest.raises(DatastoreNotFoundError, match=r"'not-created'.*create-container"):
        train(input_path=SAMPLE_PATH)


def test_wrong_key_fails_clearly_and_no_log_line_holds_it(
    container: ContainerClient,
    azurite: Azurite,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(
        "SOMEMODEL_BLOB_CONNECTION_STRING", azurite.connection_string_with_key(WRONG_KEY)
    )
    state = train(input_path=SAMPLE_PATH, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, DatastoreError)
    assert "SOMEMODEL_BLOB_CONNECTION_STRING" in str(error)
    assert main(["--input-path", SAMPLE_PATH]) == 1

    APILogHandler().flush()
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        api_logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    captured = capfd.readouterr()
    assert "SOMEMODEL_BLOB_CONNECTION_STRING" in captured.err
    assert any("not authorised" in log.message for log in api_logs)
    everything = "\n".join(
        [str(error), caplog.text, captured.out, captured.err, *(log.message for log in api_logs)]
    )
    for secret in (WRONG_KEY, ACCOUNT_KEY, WRONG_KEY[:16], ACCOUNT_KEY[:16], "AccountKey="):
        assert secret not in everything


def test_saved_block_is_enough_to_find_the_container(
    container: ContainerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(2):  # idempotent
        assert blob_setup(["--create-container", "--save-block", "somemodel-it-blob"]) == 0
    monkeypatch.delenv("SOMEMODEL_BLOB_CONNECTION_STRING")
    monkeypatch.setenv("SOMEMODEL_BLOB_CREDENTIALS_BLOCK", "somemodel-it-blob")
    store = BlobDatastore.from_settings(Settings())
    assert store.exists(SAMPLE_PATH)
    assert store.container == container.container_name

    monkeypatch.setenv("SOMEMODEL_BLOB_CREDENTIALS_BLOCK", "never-saved")
    with pytest.raises(DatastoreError, match="--save-block never-saved"):
        BlobDatastore.from_settings(Settings())


def test_cli_uploads_once_and_refuses_to_overwrite(
    store: BlobDatastore, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--upload", str(SAMPLE_CSV), "raw/cli/iris.csv"]
    assert blob_setup(args) == 0
    assert store.fingerprint("raw/cli/iris.csv") == f"sha256:{sha256_of_file(SAMPLE_CSV)}"
    assert blob_setup(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert blob_setup(["--upload", str(SAMPLE_CSV), "../escape.csv"]) == 1
