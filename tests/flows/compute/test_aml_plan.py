"""The planning compute: a dry run's steps as one AML pipeline job YAML that runs elsewhere."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from azure.ai.ml import load_environment, load_job

from flows.compute.aml_plan import AmlPlanCompute
from flows.compute.aml_specs import AmlTarget, environment_version
from flows.compute.base import EnvironmentSpec, ModelToRegister, WheelRef
from flows.plan import data_prep_step, train_step

RUN_ID = "train-2026-11-23-1a2b3c4d"
TARGET = AmlTarget("workspaceblobstore", "cpu-cluster", "somemodel", 21600)
DS = "azureml://datastores/workspaceblobstore/paths"


@pytest.fixture
def env_spec(tmp_path: Path) -> EnvironmentSpec:
    wheel = tmp_path / "dist" / "somemodel-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK wheel bytes")
    ref = WheelRef(wheel, "cd" * 32, f"wheels/{'cd' * 32}/{wheel.name}")
    return EnvironmentSpec(
        "somemodel-env", "mcr.microsoft.com/azureml/img:1", ("pandas==3.1.1",), ref
    )


def plan(tmp_path: Path, env_spec: EnvironmentSpec) -> Path:
    compute = AmlPlanCompute(TARGET, tmp_path / "plans", {"prefect_flow_run_id": "f1"})
    environment = compute.prepare_environment(env_spec)
    prep = data_prep_step(RUN_ID, "raw/2026-11-23.csv", "uri_file", "species")
    prepared = compute.run_step(prep, environment)
    assert prepared.status == "Planned"
    train = train_step(RUN_ID, prepared.outputs["output_dataframe_path"], "species", "raw/x.csv")
    trained = compute.run_step(train, environment)
    assert compute.register_model(ModelToRegister(RUN_ID, "m", "ab")).model_id is None
    return Path(trained.url)


def test_pipeline_yaml_chains_train_to_data_prep_and_loads_from_elsewhere(
    tmp_path: Path, env_spec: EnvironmentSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = plan(tmp_path, env_spec)
    folder = pipeline.parent
    assert pipeline == tmp_path / "plans" / RUN_ID / "pipeline.yaml"
    assert str(tmp_path) not in pipeline.read_text()  # nothing tied to this machine

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # Moved, as a plan reviewed on another machine would be: it holds all it needs.
    moved = shutil.move(str(folder), str(tmp_path / "copied-plan"))
    job = load_job(Path(moved) / "pipeline.yaml")
    assert job.type == "pipeline"
    assert list(job.jobs) == ["data_prep", "train"]
    train = job.jobs["train"]
    assert train.inputs["training_dataframe"]._data.path == (
        "${{parent.jobs.data_prep.outputs.output_dataframe_path}}"
    )
    prep = job.jobs["data_prep"]
    assert prep.inputs["input_dataset_path"].path == f"{DS}/raw/2026-11-23.csv"
    assert prep.outputs["output_dataframe_path"].path == f"{DS}/prepared_dataframes/{RUN_ID}/"
    assert train.outputs["trained_model"].path == f"{DS}/trained_models/{RUN_ID}/"
    for node, script in ((prep, "run_data_prep.py"), (train, "run_train.py")):
        # Relative paths resolve against the YAML's folder, as `az ml job create -f` does.
        assert Path(job.base_path) == Path(moved)
        code = Path(job.base_path) / str(node.code)
        assert (code / script).is_file()
        assert str(node.command).startswith(f"python {script}")
        build = Path(job.base_path) / node.environment.build.path
        assert (build / "Dockerfile").is_file()
        assert (build / "somemodel-0.1.0-py3-none-any.whl").is_file()
    rest = job._to_rest_object().as_dict()["properties"]
    assert rest["jobs"]["train"]["inputs"]["training_dataframe"]["value"] == (
        "${{parent.jobs.data_prep.outputs.output_dataframe_path}}"
    )
    assert rest["settings"]["continue_on_step_failure"] is False
    named = load_environment(Path(moved) / "environment.yaml")
    assert (named.name, named.version) == ("somemodel-env", environment_version(env_spec))
    assert os.getcwd() == str(elsewhere)
