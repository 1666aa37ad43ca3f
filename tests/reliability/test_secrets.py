"""Runs the train flow (local compute, blob datastore on Azurite) with a recognisable
secret in every secret setting, then scans everything the runs wrote: logs
(Python's and Prefect's, read back from the API), artifacts, error messages,
every blob of the datastore and the step processes' environments."""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)

import flows.compute.local as local_compute
from flows.compute.base import StepFailedError
from flows.datastore.blob import BlobDatastore
from flows.settings import Settings
from flows.train import SAMPLE_PATH, seed_sample, train
from tests.conftest import TEST_CACHE_DIR
from tests.services import ACCOUNT_KEY, Azurite

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

CLIENT_SECRET = "FAKE-CLIENT-SECRET-q8Zr~3xY"
SAS = "sv=2025-01-05&ss=b&srt=sco&sp=rwdlac&se=2030-01-01&sig=FAKESASSIGNATUREabc%2Bdef%3D"
# What the step process may see: nothing from the orchestrator's environment.
STEP_ENV_KEYS = {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONUNBUFFERED", "PYTHONPYCACHEPREFIX"}


def secrets() -> list[str]:
    return [ACCOUNT_KEY, ACCOUNT_KEY[:24], "AccountKey=", CLIENT_SECRET, SAS, "FAKESASSIGNATURE"]


@dataclass
class Scan:
    texts: dict[str, str] = field(default_factory=dict)
    step_envs: list[dict[str, str]] = field(default_factory=list)
    flow_run_ids: list[Any] = field(default_factory=list)


@pytest.fixture(scope="module")
def scan(azurite: Azurite, tmp_path_factory: pytest.TempPathFactory) -> Scan:
    result = Scan()
    container = azurite.new_container_name("secrets")
    real_popen = subprocess.Popen

    def recording_popen(argv: Any, *args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        result.step_envs.append(dict(kwargs.get("env") or {}))
        result.texts[f"argv {len(result.step_envs)}"] = " ".join(map(str, argv))
        return real_popen(argv, *args, **kwargs)

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect(level=logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s %(exc_info)s"))
    loggers = [logging.getLogger(name) for name in ("", "prefect", "flows", "azure")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "DATASTORE": "blob",
            "BLOB_CONTAINER": container,
            "BLOB_CONNECTION_STRING": azurite.connection_string,
            "CACHE_DIR": str(TEST_CACHE_DIR),
            "AML_TENANT_ID": "00000000-0000-0000-0000-00000000000a",
            "AML_CLIENT_ID": "00000000-0000-0000-0000-00000000000b",
            "AML_CLIENT_SECRET": CLIENT_SECRET,
        }.items():
            patch.setenv(f"SOMEMODEL_{key}", value)
        # Secrets of other tools in the orchestrator's environment must not reach steps.
        patch.setenv("AZURE_CLIENT_SECRET", CLIENT_SECRET)
        patch.setenv("AZURE_STORAGE_SAS_TOKEN", SAS)
        patch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
        patch.setattr(local_compute.subprocess, "Popen", recording_popen)
        store = BlobDatastore.from_settings(Settings())
        store.create_container()
        seed_sample(Settings())

        good = train(input_path=SAMPLE_PATH, return_state=True)
        assert good.is_completed(), good.message
        result.flow_run_ids.append(good.state_details.flow_run_id)
        result.texts["good run result"] = repr(good.result())

        bad_csv = tmp_path_factory.mktemp("bad") / "bad.csv"
        bad_csv.write_text("a,b,target\n1,2,x\n")
        store.upload_file(bad_csv, "raw/bad.csv")
        bad = train(input_path="raw/bad.csv", return_state=True)
        assert bad.is_failed()
        result.flow_run_ids.append(bad.state_details.flow_run_id)
        result.texts["failed run message"] = str(bad.message)
        with pytest.raises(StepFailedError) as info:
            bad.result()
        result.texts["failed run exception"] = f"{info.value!r} {info.value}"

        missing = train(input_path="raw/does-not-exist.csv", return_state=True)
        result.flow_run_ids.append(missing.state_details.flow_run_id)
        result.texts["missing input message"] = str(missing.message)

        for path in store.list_files(""):
            local = tmp_path_factory.mktemp("blob") / "file"
            store.download_file(path, local)
            result.texts[f"blob {path}"] = local.read_bytes().decode("utf-8", errors="replace")
        assert any(name.endswith("metadata.json") for name in result.texts)
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)
    assert records, "nothing was logged: the scan would prove nothing"
    result.texts["python logs"] = "\n".join(records)
    return result


def _all_logs(client: Any, run_id: Any) -> list[Any]:
    """Every log line of the run, page by page (the API returns at most 200 at once)."""
    logs: list[Any] = []
    while page := client.read_logs(
        LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200, offset=len(logs)
    ):
        logs += page
    return logs


def test_no_secret_in_logs_messages_artifacts_or_blobs(
    scan: Scan, caplog: pytest.LogCaptureFixture
) -> None:
    texts = dict(scan.texts)
    with get_client(sync_client=True) as client:
        for run_id in scan.flow_run_ids:
            # Prefect ships logs in batches from a background worker: wait for them.
            deadline = time.monotonic() + 60
            while not (logs := _all_logs(client, run_id)):
                assert time.monotonic() < deadline, (
                    f"no Prefect logs for flow run {run_id}: the scan would prove nothing"
                )
                time.sleep(1)
            texts[f"prefect logs {run_id}"] = "\n".join(log.message for log in logs)
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
            texts[f"artifacts {run_id}"] = "\n".join(repr(a.data) for a in artifacts)
            texts[f"flow run {run_id}"] = client.read_flow_run(run_id).model_dump_json()
    assert any("train-summary" in t or "Training run" in t for t in texts.values())
    for name, text in texts.items():
        for secret in secrets():
            assert secret not in text, f"{secret[:12]}... leaked into {name}"


def test_settings_never_show_their_secrets() -> None:
    settings = Settings(
        blob_connection_string=f"AccountName=a;AccountKey={ACCOUNT_KEY}",
        aml_tenant_id="t",
        aml_client_id="c",
        aml_client_secret=CLIENT_SECRET,
    )
    shown = f"{settings!r} {settings} {settings.model_dump()} {settings.model_dump_json()}"
    for secret in secrets():
        assert secret not in shown


def test_step_processes_get_only_what_they_need(scan: Scan) -> None:
    assert len(scan.step_envs) >= 2, "the steps did not run through the recorded Popen"
    for env in scan.step_envs:
        assert set(env) <= STEP_ENV_KEYS, f"unexpected variables {set(env) - STEP_ENV_KEYS}"
        joined = "\n".join(env.values())
        for secret in secrets():
            assert secret not in joined
