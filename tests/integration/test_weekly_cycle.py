"""The weekly cycle, unattended, on a real Prefect server, a process worker and Azurite.

Set up as the README says (`deployments.setup` with a webhook, `prefect deploy
--all`, a worker); nothing is put in place by hand for week 1. Runs are created
through the API at given scheduled times, as the schedules would:

- week 1: training on the seeded default input completes and triggers scoring,
  which scores the seeded CSV;
- week 2: two new CSVs arrive; two scoring runs started together score each
  of them exactly once between them, and nothing else;
- week 3, four runs at once: a scoring run completes "nothing new" and
  predictions/latest.json stays; a model much worse than the current one is
  not promoted (NotPromoted) and is announced; a run on a missing input fails
  with the path and the fix as its state message and reaches the webhook; the
  retention clean-up deletes a month-old run's leftovers and keeps what
  latest.json names;
- then shifted data (petal_length x 3, no setosa) is scored: the run ends
  Drifted with the tag `drift`, and the drift reaches the webhook too.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pandas as pd
import pytest
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Scheduled
from sklearn.model_selection import train_test_split

from flows.datastore.blob import BlobDatastore
from flows.settings import Settings
from tests.conftest import REPO_ROOT, SAMPLE_CSV, TEST_CACHE_DIR
from tests.prefect_server import (
    VENV_BIN,
    BackgroundProcess,
    PrefectServer,
    check_cli,
    wait_final,
)
from tests.services import Azurite, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN = "train-somemodel/weekly"
SCORE = "score-somemodel/weekly"
CLEANUP = "cleanup-somemodel/weekly"
BLOCK = "somemodel-blob-cycle"
RUN_TIMEOUT_SECONDS = 600.0
# Scheduled times in the past (a worker runs only what is due): three Mondays ago.
NOW = datetime.now(UTC)
WEEK_1 = NOW - timedelta(days=14, minutes=1)
WEEK_2 = NOW - timedelta(days=7, minutes=1)
WEEK_3 = NOW - timedelta(minutes=1)
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@dataclass
class Webhook:
    """An HTTP receiver on 127.0.0.1 that keeps every JSON body posted to it."""

    port: int
    received: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(self, text: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in list(self.received):
                if text in json.dumps(body):
                    return body
            time.sleep(1)
        pytest.fail(f"no notification mentioning {text!r}; received: {self.received}")


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            hook.received.append(json.loads(self.rfile.read(length) or b"{}"))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", hook.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Cycle:
    server: PrefectServer
    worker: BackgroundProcess
    store: BlobDatastore
    webhook: Webhook
    # The flow runs the test created itself (the rest are the scheduler's or triggered).
    created: set[UUID] = field(default_factory=set)
    # Runs created before this (by earlier tests on the shared server) are not this cycle's.
    started: datetime = field(default_factory=lambda: datetime.now(UTC))


@pytest.fixture(scope="module")
def cycle(
    prefect_server: PrefectServer,
    azurite: Azurite,
    webhook: Webhook,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cycle]:
    container = azurite.new_container_name("cycle")
    workdir = tmp_path_factory.mktemp("cycle")
    setup_env = {
        "SOMEMODEL_DATASTORE": "blob",
        "SOMEMODEL_BLOB_CONTAINER": container,
        "SOMEMODEL_BLOB_CONNECTION_STRING": azurite.connection_string,
        "SOMEMODEL_BLOB_CREDENTIALS_BLOCK": BLOCK,
        "SOMEMODEL_NOTIFICATION_WEBHOOK_URL": webhook.url,
    }
    out = check_cli(
        subprocess.run(
            [str(VENV_BIN / "python"), "-m", "deployments.setup"],
            cwd=workdir,
            env=prefect_server.env(setup_env),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        ),
        "python -m deployments.setup",
    )
    assert "Seeded the default input 'raw/train'" in out, out
    assert "the automation 'somemodel-run-failed'" in out, out
    check_cli(
        prefect_server.run_cli(["--no-prompt", "deploy", "--all"], cwd=REPO_ROOT),
        "prefect deploy --all",
    )
    # Runs an earlier test left on the shared server must not run here, on this container.
    prefect_server.delete_unfinished_runs()
    worker = prefect_server.start_background(
        [str(VENV_BIN / "prefect"), "worker", "start", "--pool", "somemodel-process"],
        log=workdir / "worker.log",
        cwd=workdir,
        extra_env={
            "SOMEMODEL_DATASTORE": "blob",
            "SOMEMODEL_BLOB_CONTAINER": container,
            "SOMEMODEL_BLOB_CREDENTIALS_BLOCK": BLOCK,
            "SOMEMODEL_CACHE_DIR": str(TEST_CACHE_DIR),
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            # Two scoring runs at once, plus the one a training run triggers.
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        },
    )
    store = BlobDatastore.from_settings(
        Settings(
            datastore="blob",
            blob_container=container,
            blob_connection_string=azurite.connection_string,
        )
    )
    try:
        yield Cycle(prefect_server, worker, store, webhook)
    finally:
        worker.stop()
        prefect_server.delete_unfinished_runs()
        print(f"\n--- worker log (tail) ---\n{worker.log_tail(4000)}")


def _create_run(cycle: Cycle, name: str, when: datetime, **parameters: Any) -> UUID:
    with cycle.server.client() as client:
        deployment = client.read_deployment_by_name(name)
        run = client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, state=Scheduled(scheduled_time=when)
        )
    cycle.created.add(run.id)
    return run.id


def _wait_final(cycle: Cycle, flow_run_id: UUID) -> FlowRun:
    return wait_final(cycle.server, cycle.worker, flow_run_id, RUN_TIMEOUT_SECONDS, poll=2)


def _completed(cycle: Cycle, flow_run_id: UUID) -> FlowRun:
    flow_run = _wait_final(cycle, flow_run_id)
    assert flow_run.state is not None
    assert flow_run.state.type == StateType.COMPLETED, (
        f"{flow_run.name}: {flow_run.state.name} {flow_run.state.message}\n"
        f"{cycle.worker.log_tail()}"
    )
    return flow_run


def _triggered_score_runs(cycle: Cycle) -> list[FlowRun]:
    """Scoring runs an automation created (neither the scheduler's nor the test's)."""
    with cycle.server.client() as client:
        deployment = client.read_deployment_by_name(SCORE)
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])
            )
        )
    return [
        run
        for run in runs
        if run.id not in cycle.created
        and not (run.idempotency_key or "").startswith("scheduled ")
        and run.created is not None
        and run.created >= cycle.started
    ]


def _json(cycle: Cycle, path: str) -> dict[str, Any] | None:
    current = cycle.store.read_versioned(path)
    return json.loads(current.text) if current else None


def _scored_inputs(cycle: Cycle, run_name: str) -> list[str]:
    manifest = _json(cycle, f"predictions/{run_name}/manifest.json")
    return [item["path"] for item in manifest["inputs"]] if manifest else []


def _summary(cycle: Cycle, flow_run_id: UUID, key: str) -> str:
    with cycle.server.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return "\n".join(str(a.data) for a in artifacts if a.key == key)


def _put_csv(cycle: Cycle, tmp_path: Path, path: str, frame: pd.DataFrame) -> None:
    local = tmp_path / Path(path).name
    frame.to_csv(local, index=False)
    cycle.store.upload_file(local, path)


def _worse_training_data() -> pd.DataFrame:
    """Iris whose training rows carry another class's features; the held-out rows are true.

    The train step splits with `train_test_split(test_size=0.2, random_state=42,
    stratify=target)`; the labels are unchanged here, so the same split picks
    the rows it trains on. Those get the features of rows of the next class, so
    the new model learns a wrong mapping and is far worse than the current
    model on the same (true) held-out rows.
    """
    frame = pd.read_csv(SAMPLE_CSV)
    train_rows, _ = train_test_split(
        np.arange(len(frame)), test_size=0.2, random_state=42, stratify=frame["target"]
    )
    classes = sorted(frame["target"].unique())
    donors = {c: frame.index[frame["target"] == c].to_numpy() for c in classes}
    worse = frame.copy()
    for n, row in enumerate(sorted(train_rows)):
        label = frame.at[row, "target"]
        other = classes[(classes.index(label) + 1) % len(classes)]
        donor = donors[other][n % len(donors[other])]
        worse.loc[row, FEATURES] = frame.loc[donor, FEATURES].to_numpy()
    return worse


def test_three_week_cycle(cycle: Cycle, tmp_path: Path) -> None:
    sample = pd.read_csv(REPO_ROOT / "data" / "sample" / "iris_score.csv")

    # Week 1: the deployments' defaults, nothing put in place by hand.
    trained = _completed(cycle, _create_run(cycle, TRAIN, WEEK_1))
    assert trained.name.startswith(f"train-{WEEK_1.date().isoformat()}-")
    latest_model = _json(cycle, "trained_models/latest.json")
    assert latest_model is not None
    assert latest_model["run_id"] == trained.name
    trained_on = _json(cycle, f"trained_models/{trained.name}/training_files.json")
    assert trained_on is not None
    assert [f["path"] for f in trained_on["files"]] == ["raw/train/iris.csv"]
    deadline = time.monotonic() + 120
    while not (triggered := _triggered_score_runs(cycle)):
        assert time.monotonic() < deadline, "the completed training run triggered no scoring run"
        time.sleep(2)
    (scored_1,) = triggered
    scored_1 = _completed(cycle, scored_1.id)
    assert _scored_inputs(cycle, scored_1.name) == ["iris_score.csv"]
    manifest = _json(cycle, f"predictions/{scored_1.name}/manifest.json")
    assert manifest is not None
    assert manifest["model_run_id"] == trained.name

    # Week 2: two new files; two scoring runs at once score each exactly once.
    _put_csv(cycle, tmp_path, "raw/score/week-2-a.csv", sample.iloc[:4])
    _put_csv(cycle, tmp_path, "raw/score/week-2-b.csv", sample.iloc[4:7])
    both = [_create_run(cycle, SCORE, WEEK_2) for _ in range(2)]
    runs = [_completed(cycle, run_id) for run_id in both]
    scored = [path for run in runs for path in _scored_inputs(cycle, run.name)]
    assert sorted(scored) == ["week-2-a.csv", "week-2-b.csv"], scored
    index = _json(cycle, "scored_files/index.json")
    assert index is not None
    states = {r["path"]: r["state"] for r in index["files"].values()}
    assert states == {
        "raw/score/iris_score.csv": "scored",
        "raw/score/week-2-a.csv": "scored",
        "raw/score/week-2-b.csv": "scored",
    }
    pointer = _json(cycle, "predictions/latest.json")
    assert pointer is not None

    # Week 3, four runs at once as the worker takes them: scoring with nothing
    # new, a much worse model, a run on a missing input, and the retention
    # clean-up (a month-old run's leftovers go; what latest.json names stays).
    _put_csv(cycle, tmp_path, "raw/worse/iris.csv", _worse_training_data())
    month_old = (NOW - timedelta(days=30)).date().isoformat()
    leftover = f"prepared_dataframes/train-{month_old}-0ld0ld00/prepared.parquet"
    cycle.store.write_conditional(leftover, "old", etag=None)
    latest_scoring = pointer["run_id"]
    assert cycle.store.list_files(f"score_batches/{latest_scoring}")
    week_3 = {
        "quiet": _create_run(cycle, SCORE, WEEK_3),
        "worse": _create_run(cycle, TRAIN, WEEK_3, input_path="raw/worse"),
        "failed": _create_run(cycle, TRAIN, WEEK_3, input_path="raw/missing.csv"),
        "cleaned": _create_run(cycle, CLEANUP, WEEK_3, older_than_days=3, dry_run=False),
    }

    # Nothing new: no predictions, and latest.json stays.
    quiet = _completed(cycle, week_3["quiet"])
    assert not cycle.store.list_files(f"predictions/{quiet.name}")
    assert "nothing new" in _summary(cycle, quiet.id, "score-summary")
    assert _json(cycle, "predictions/latest.json") == pointer

    # A much worse model is kept out, and announced.
    worse = _wait_final(cycle, week_3["worse"])
    assert worse.state is not None
    assert (worse.state.type, worse.state.name) == (StateType.COMPLETED, "NotPromoted")
    message = worse.state.message or ""
    assert message.startswith("not promoted: accuracy 0."), message
    assert f"for the current model {trained.name}" in message
    assert "not promoted" in _summary(cycle, worse.id, "train-summary")
    assert _json(cycle, "trained_models/latest.json") == latest_model
    announced = cycle.webhook.wait_for(worse.name)
    assert "NotPromoted" in announced["subject"]

    # A failing run: its state message (what the UI shows) names the input and
    # the fix, nothing of it is kept, and it reaches the webhook with its name.
    failed = _wait_final(cycle, week_3["failed"])
    assert failed.state is not None
    assert failed.state.type == StateType.FAILED
    message = failed.state.message or ""
    assert "input 'raw/missing.csv' does not exist" in message, message
    assert "give an existing file" in message
    assert not cycle.store.list_files(f"prepared_dataframes/{failed.name}")
    assert _json(cycle, "trained_models/latest.json") == latest_model
    notice = cycle.webhook.wait_for(failed.name)
    assert "Failed" in notice["subject"]
    assert "input 'raw/missing.csv' does not exist" in notice["text"]
    assert str(failed.id) in notice["text"]

    cleaned = _completed(cycle, week_3["cleaned"])
    assert not cycle.store.exists(leftover)
    assert cycle.store.list_files(f"score_batches/{latest_scoring}")
    assert cycle.store.list_files(f"predictions/{latest_scoring}")
    assert cycle.store.list_files(f"prepared_dataframes/{trained.name}")
    summary = _summary(cycle, cleaned.id, "cleanup-summary")
    assert f"deleted `prepared_dataframes/train-{month_old}-0ld0ld00/`" in summary
    assert f"kept `score_batches/{latest_scoring}/`: in use" in summary

    # The NotPromoted run triggered a scoring run too (promoted or not, see
    # prefect.yaml): with nothing new in week 3 it scores nothing. It must end
    # before the shifted file arrives, or it, not the run below, would score it.
    deadline = time.monotonic() + 120
    while len(triggered := _triggered_score_runs(cycle)) < 2:
        assert time.monotonic() < deadline, "the NotPromoted run triggered no scoring run"
        time.sleep(2)
    after_worse = _completed(cycle, max(triggered, key=lambda run: run.created).id)
    assert "nothing new" in _summary(cycle, after_worse.id, "score-summary")

    # Drifted data is scored and announced like a failure (docs/score.md, "Drift").
    shifted = pd.read_csv(SAMPLE_CSV)
    shifted = shifted[shifted["target"] != "setosa"].drop(columns="target")
    shifted["petal_length"] *= 3
    _put_csv(cycle, tmp_path, "raw/score/week-3-shifted.csv", shifted)
    drifted = _wait_final(cycle, _create_run(cycle, SCORE, WEEK_3))
    assert drifted.state is not None
    assert (drifted.state.type, drifted.state.name) == (StateType.COMPLETED, "Drifted")
    assert "drift" in drifted.tags
    assert (drifted.state.message or "").startswith("DRIFT: ")
    assert "petal_length (PSI " in (drifted.state.message or "")
    assert _json(cycle, "predictions/latest.json")["run_id"] == drifted.name  # type: ignore[index]
    notice = cycle.webhook.wait_for(drifted.name)
    assert "Drifted" in notice["subject"]
    assert "petal_length (PSI " in notice["text"]
