"""The whole train flow with SOMEMODEL_COMPUTE=aml against the fake workspace and Azurite.

The fake `MLClient` (the one patched seam) runs each job when it "completes"
as AML would: the job's own command line, with its `azureml://` inputs
downloaded from and outputs uploaded to the blob container (Azurite), in a
virtual env with the wheel and pinned packages (the image). So the flow's
verify step finds the model the AML job wrote, where the job spec said.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from flows.compute.aml_client import AmlPreflightError
from flows.compute.base import EnvironmentRef
from flows.datastore.blob import BlobDatastore
from flows.settings import Settings
from flows.summary import TrainSummary
from flows.train import SAMPLE_PATH, main, seed_sample, train
from tests.flows.compute.aml_runner import DATASTORE_URI, fake_aml_workspace
from tests.flows.compute.fake_aml import FakeMLClient
from tests.services import Azurite

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.usefixtures("prefect_api")]


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
        "aml",
        PLAN_DIR=str(tmp_path_factory.mktemp("plans")),
        AML_REGISTER_MODEL="true",
    ) as fake:
        seed_sample(Settings())
        yield fake


@pytest.fixture(scope="module")
def first_run(workspace: FakeMLClient) -> TrainSummary:
    summary = train(input_path=SAMPLE_PATH)
    assert isinstance(summary, TrainSummary)
    return summary


def test_train_flow_runs_its_steps_as_aml_jobs(
    workspace: FakeMLClient, first_run: TrainSummary
) -> None:
    run_id = first_run.run_id
    assert sorted(workspace.jobs.records) == [f"{run_id}-data-prep", f"{run_id}-train"]
    train_job = workspace.jobs.records[f"{run_id}-train"].job
    assert train_job.inputs["training_dataframe"].path == (
        f"{DATASTORE_URI}prepared_dataframes/{run_id}/"
    )
    assert [s.status for s in first_run.steps] == ["Completed", "Completed"]
    assert all(s.url.startswith("https://ml.azure.com/runs/") for s in first_run.steps)
    store = BlobDatastore.from_settings(Settings())
    metadata = json.loads(store.read_versioned(f"trained_models/{run_id}/metadata.json").text)
    assert metadata["model_sha256"] == first_run.model.model_sha256
    assert first_run.promoted
    # The service numbered the version; the run is in its tags.
    (registered,) = workspace.models.versions.values()
    assert registered.version == "1"
    assert registered.tags["run_id"] == run_id
    assert registered.tags["model_sha256"] == first_run.model.model_sha256
    markdown = first_run.to_markdown()
    assert f"[open](https://ml.azure.com/runs/{run_id}-train" in markdown


def test_second_run_reuses_the_environment(
    workspace: FakeMLClient, first_run: TrainSummary
) -> None:
    second = train(input_path=SAMPLE_PATH)
    assert isinstance(second, TrainSummary)
    assert second.environment.reused
    assert workspace.calls["environments.create_or_update"] == 1


def test_failed_job_fails_the_flow_with_the_studio_url(
    workspace: FakeMLClient, first_run: TrainSummary, tmp_path: Path
) -> None:
    store = BlobDatastore.from_settings(Settings())
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    store.upload_file(bad, "raw/no-target.csv", overwrite=True)
    with pytest.raises(Exception, match=r"ended Failed.*\n.*Studio: https://ml.azure.com"):
        train(input_path="raw/no-target.csv")


def test_dry_run_writes_yaml_and_submits_nothing(
    workspace: FakeMLClient, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs_before = dict(workspace.calls)
    assert main(["--input-path", SAMPLE_PATH, "--run-id", "train-dry-run-1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    folder = Settings().plan_dir / "train-dry-run-1"
    assert f"plan:      {folder}" in out
    assert sorted(p.name for p in folder.glob("*.yaml")) == ["environment.yaml", "pipeline.yaml"]
    assert (folder / "environment" / "Dockerfile").is_file()
    pipeline = (folder / "pipeline.yaml").read_text()
    assert "${{parent.jobs.data_prep.outputs.output_dataframe_path}}" in pipeline
    assert "prepared_dataframes/train-dry-run-1/" in pipeline
    assert str(folder) not in pipeline
    assert dict(workspace.calls) == jobs_before


def test_wrong_workspace_fails_before_any_upload(
    workspace: FakeMLClient, monkeypatch: pytest.MonkeyPatch, azurite: Azurite
) -> None:
    name = azurite.new_container_name("aml-wrong")
    ContainerClient.from_connection_string(azurite.connection_string, name).create_container()
    monkeypatch.setenv("SOMEMODEL_BLOB_CONTAINER", name)
    monkeypatch.setenv("SOMEMODEL_AML_WORKSPACE", "not-my-workspace")
    seed_sample(Settings())
    with pytest.raises(AmlPreflightError, match="'not-my-workspace' not found"):
        train(input_path=SAMPLE_PATH)
    store = BlobDatastore.from_settings(Settings())
    assert store.list_files("wheels") == []
