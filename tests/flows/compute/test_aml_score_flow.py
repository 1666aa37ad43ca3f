"""The score flow with SOMEMODEL_COMPUTE=aml against the fake workspace and Azurite.

Train first (as AML jobs), then score: one file as a command job, and a folder
of CSVs as a fan-out of shard command jobs plus a merge command job. The fake
`MLClient` (the one patched seam) runs each job when it "completes" as AML
would (tests/flows/compute/aml_runner.py), so the flow verifies and promotes
predictions that the jobs wrote where their specs said.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from azure.ai.ml.entities import Command

import flows.score as score_flow
import flows.train as train_flow
from flows.compute.base import EnvironmentRef
from flows.datastore.blob import BlobDatastore
from flows.scoring import ScoreSummary
from flows.settings import Settings
from flows.summary import TrainSummary
from tests.flows.compute.aml_runner import DATASTORE_URI, fake_aml_workspace
from tests.flows.compute.fake_aml import FakeMLClient
from tests.services import Azurite

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]

FOLDER = "raw/week-48"
FILES = 5


@pytest.fixture(scope="module")
def image(step_environment: EnvironmentRef) -> EnvironmentRef:
    """What the AML image holds: the wheel and the pinned packages, as a local venv."""
    return step_environment


@pytest.fixture(scope="module")
def workspace(
    azurite: Azurite, image: EnvironmentRef, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FakeMLClient]:
    with fake_aml_workspace(
        azurite,
        image,
        tmp_path_factory.mktemp("aml-uploads"),
        "aml-score",
        SCORE_SHARDS="2",
        SCORE_MIN_FILES_PER_SHARD="2",
    ) as fake:
        train_flow.seed_sample(Settings())
        score_flow.seed_sample(Settings())
        yield fake


@pytest.fixture(scope="module")
def store(workspace: FakeMLClient) -> BlobDatastore:
    return BlobDatastore.from_settings(Settings())


@pytest.fixture(scope="module")
def trained(workspace: FakeMLClient) -> TrainSummary:
    summary = train_flow.train(input_path=train_flow.SAMPLE_PATH)
    assert isinstance(summary, TrainSummary)
    return summary


@pytest.fixture(scope="module")
def week_folder(store: BlobDatastore, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The sample split into FILES CSVs, one in a subfolder, plus a file that is not a CSV."""
    rows = pd.read_csv(score_flow.SAMPLE_FILE, dtype={"id": str})
    local = tmp_path_factory.mktemp("week")
    names = [f"day-{i}.csv" for i in range(FILES - 1)] + ["shop-b/day-9.csv"]
    for i, name in enumerate(names):
        path = local / f"{i}.csv"
        rows.iloc[i::FILES].to_csv(path, index=False)
        store.upload_file(path, f"{FOLDER}/{name}", overwrite=True)
    (local / "notes.txt").write_text("delivered late\n")
    store.upload_file(local / "notes.txt", f"{FOLDER}/notes.txt", overwrite=True)
    return FOLDER


def latest_run(store: BlobDatastore) -> str:
    latest = store.read_versioned("predictions/latest.json")
    assert latest is not None
    return str(json.loads(latest.text)["run_id"])


def predictions_csv(store: BlobDatastore, run_id: str, tmp: Path) -> bytes:
    store.download_file(f"predictions/{run_id}/predictions.csv", tmp / f"{run_id}.csv")
    return (tmp / f"{run_id}.csv").read_bytes()


def test_one_file_is_scored_by_a_command_job_like_train(
    workspace: FakeMLClient, store: BlobDatastore, trained: TrainSummary
) -> None:
    summary = score_flow.score(input_path=score_flow.SAMPLE_PATH)
    assert isinstance(summary, ScoreSummary)
    run_id = summary.run_id
    assert summary.shards == ()
    job = workspace.jobs.records[f"{run_id}-score"].job
    assert isinstance(job, Command)
    assert job.inputs["model"].path == f"{DATASTORE_URI}trained_models/{trained.run_id}/"
    assert job.inputs["input_data"].path == f"{DATASTORE_URI}samples/iris_score.csv"
    assert job.inputs["input_data"].type == "uri_file"
    assert job.outputs["predictions"].path == f"{DATASTORE_URI}predictions/{run_id}/"
    assert str(job.command).startswith("python run_score.py --model ${{inputs.model}}")
    assert job.environment == f"azureml:{summary.environment.name}:{summary.environment.version}"
    assert summary.step.url.startswith(f"https://ml.azure.com/runs/{run_id}-score")
    assert summary.predictions.rows == 30
    assert summary.model.run_id == trained.run_id
    assert summary.promoted
    assert latest_run(store) == run_id


def test_a_folder_is_scored_by_shard_command_jobs_then_merged(
    workspace: FakeMLClient,
    store: BlobDatastore,
    trained: TrainSummary,
    week_folder: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    summary = score_flow.score(input_path=week_folder)
    assert isinstance(summary, ScoreSummary)
    run_id = summary.run_id
    for k in range(2):
        job = workspace.jobs.records[f"{run_id}-score-{k}"].job
        assert isinstance(job, Command)
        assert job.inputs["input_data"].path == f"{DATASTORE_URI}{week_folder}/"
        assert job.inputs["model"].path == f"{DATASTORE_URI}trained_models/{trained.run_id}/"
        assert job.outputs["predictions"].path == (
            f"{DATASTORE_URI}prediction_parts/{run_id}/shard-{k}/"
        )
        assert str(job.command).startswith("python run_score.py --model ${{inputs.model}}")
        assert str(job.command).endswith(f"--shard-index {k} --shard-count 2")
    assert f"{run_id}-score" not in workspace.jobs.records
    merge = workspace.jobs.records[f"{run_id}-score-merge"].job
    assert isinstance(merge, Command)
    assert merge.inputs["shard_1"].path == f"{DATASTORE_URI}prediction_parts/{run_id}/shard-1/"
    assert merge.outputs["predictions"].path == f"{DATASTORE_URI}predictions/{run_id}/"
    assert "--expected-files 5" in str(merge.command)

    assert [s.job_name for s in summary.shards] == [f"{run_id}-score-0", f"{run_id}-score-1"]
    assert summary.step.job_name == f"{run_id}-score-merge"
    assert summary.predictions.rows == 30
    assert [path for path, _ in summary.predictions.inputs] == [
        "day-0.csv", "day-1.csv", "day-2.csv", "day-3.csv", "shop-b/day-9.csv",
    ]  # fmt: skip
    assert summary.promoted
    assert latest_run(store) == run_id
    assert f"shard: `{run_id}-score-0` Completed" in summary.to_markdown()

    # One command job over the same folder: the same predictions byte for byte.
    monkeypatch.setenv("SOMEMODEL_SCORE_SHARDS", "1")
    plain = score_flow.score(input_path=week_folder, force_rerun=True)
    assert isinstance(plain, ScoreSummary)
    assert plain.shards == ()
    assert isinstance(workspace.jobs.records[f"{plain.run_id}-score"].job, Command)
    assert predictions_csv(store, run_id, tmp_path) == predictions_csv(
        store, plain.run_id, tmp_path
    )
    frame = pd.read_csv(io.BytesIO(predictions_csv(store, run_id, tmp_path)), dtype=str)
    assert sorted(frame["row_id"]) == sorted(
        pd.read_csv(score_flow.SAMPLE_FILE, dtype={"id": str})["id"]
    )


def test_a_bad_file_fails_its_shard_and_latest_stays(
    workspace: FakeMLClient,
    store: BlobDatastore,
    trained: TrainSummary,
    week_folder: str,
    tmp_path: Path,
) -> None:
    before = latest_run(store)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,sepal_length\nx,1.0\n")
    for i in range(FILES):
        store.upload_file(bad, f"raw/bad-week/{i}.csv", overwrite=True)
    with pytest.raises(
        Exception, match=r"-score-\d ended Failed.*\n.*Studio: https://ml.azure.com"
    ):
        score_flow.score(input_path="raw/bad-week")
    assert latest_run(store) == before
