"""Parallel scoring on AML: the pipeline job as the SDK serialises it, and AmlCompute running it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from azure.ai.ml import load_job
from azure.ai.ml.entities import PipelineJob

from flows.compute.aml import AmlCompute
from flows.compute.aml_specs import AmlTarget, build_parallel_run, environment_id
from flows.compute.base import EnvironmentRef, StepFailedError
from flows.plan import (
    STEPS_DIR,
    ParallelRun,
    merge_step,
    parallel_score_step,
    scoring_mode,
)
from tests.flows.compute.fake_aml import WORKSPACE, FakeClock, FakeMLClient, Outcome, Script

RUN_ID = "score-2026-11-30-1a2b3c4d"
MODEL_RUN = "train-2026-11-23-1a2b3c4d"
DS = "azureml://datastores/workspaceblobstore/paths"
TARGET = AmlTarget("workspaceblobstore", "gpu-or-cpu-cluster", "somemodel", 21600)
ENV = EnvironmentRef("somemodel-env", "0123456789abcdef", "azureml:...", reused=True)
ENV_ID = environment_id(ENV.name, ENV.version)
TAGS = {"prefect_flow_run_id": "f1", "prefect_flow_run_url": "http://prefect/runs/f1"}


@pytest.fixture
def run() -> ParallelRun:
    return parallel_score_step(
        RUN_ID,
        MODEL_RUN,
        "raw/week-48",
        "customer_id",
        instance_count=4,
        mini_batch_size=3,
        max_concurrency_per_instance=2,
    )


def test_pipeline_job_as_sent(run: ParallelRun) -> None:
    body = build_parallel_run(run, ENV_ID, TARGET, TAGS)._to_rest_object().as_dict()
    assert body["name"] == f"{RUN_ID}-score"
    props = body["properties"]
    assert props["jobType"] == "Pipeline"
    assert props["computeId"] == "gpu-or-cpu-cluster"
    assert props["experimentName"] == "somemodel"
    assert props["tags"] == {
        "run_id": RUN_ID,
        "step": "score",
        "mode": "parallel",
        "prefect_flow_run_id": "f1",
        "prefect_flow_run_url": "http://prefect/runs/f1",
    }
    assert list(props["jobs"]) == ["score"]
    node = props["jobs"]["score"]
    assert node["type"] == "parallel"
    assert node["input_data"] == "${{inputs.input_data}}"
    assert node["mini_batch_size"] == 3
    assert node["resources"] == {"instance_count": 4}
    assert node["max_concurrency_per_instance"] == 2
    assert node["error_threshold"] == node["mini_batch_error_threshold"] == 0
    assert node["retry_settings"] == {"max_retries": 2, "timeout": 3600}
    assert node["inputs"]["input_data"] == {
        "job_input_type": "uri_folder",
        "mode": "ReadOnlyMount",
        "uri": f"{DS}/raw/week-48/",
    }
    assert node["inputs"]["model"] == {
        "job_input_type": "uri_folder",
        "mode": "Download",
        "uri": f"{DS}/trained_models/{MODEL_RUN}/",
    }
    assert node["outputs"] == {
        "parts": {
            "job_output_type": "uri_folder",
            "mode": "ReadWriteMount",
            "uri": f"{DS}/prediction_parts/{RUN_ID}/",
        }
    }
    assert node["task"] == {
        "type": "run_function",
        "code": str(STEPS_DIR / "score"),
        "entry_script": "parallel_score.py",
        "environment": "azureml:somemodel-env:0123456789abcdef",
        "program_arguments": "--model ${{inputs.model}} --input-data ${{inputs.input_data}}"
        " --parts ${{outputs.parts}} --id-column customer_id --chunk-size 20000",
    }
    assert (STEPS_DIR / "score" / node["task"]["entry_script"]).is_file()


def test_pipeline_job_yaml_loads_back(run: ParallelRun, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    build_parallel_run(run, ENV_ID, TARGET, TAGS).dump(path)
    node = yaml.safe_load(path.read_text())["jobs"]["score"]
    assert node["task"]["entry_script"] == "parallel_score.py"
    assert node["resources"] == {"instance_count": 4}
    assert node["inputs"]["input_data"]["mode"] == "ro_mount"
    assert node["outputs"]["parts"]["path"] == f"{DS}/prediction_parts/{RUN_ID}/"
    loaded = load_job(path)
    assert isinstance(loaded, PipelineJob)
    assert loaded.name == f"{RUN_ID}-score"
    assert loaded.jobs["score"].mini_batch_size == 3


def test_merge_job_chains_on_the_parts_folder() -> None:
    spec = merge_step(RUN_ID, f"prediction_parts/{RUN_ID}", expected_files=12)
    assert spec.job_name == f"{RUN_ID}-score-merge"
    assert spec.code_dir == STEPS_DIR / "score"
    assert (spec.code_dir / spec.script).is_file()
    assert spec.command({"parts": "P"}, {"predictions": "O"}) == [
        "python", "run_merge.py", "--parts", "P", "--predictions", "O",
        "--run-id", RUN_ID, "--expected-files", "12",
    ]  # fmt: skip
    assert spec.output("predictions").path == f"predictions/{RUN_ID}"


@pytest.mark.parametrize(
    ("compute", "kind", "files", "min_files", "mode"),
    [
        ("aml", "uri_folder", 8, 8, "parallel"),
        ("aml", "uri_folder", 7, 8, "command"),
        ("aml", "uri_folder", 500, 0, "command"),
        ("aml", "uri_file", 1, 1, "command"),
        ("local", "uri_folder", 500, 8, "command"),
    ],
)
def test_scoring_mode(compute: str, kind: str, files: int, min_files: int, mode: str) -> None:
    assert scoring_mode(compute, kind, files, min_files) == mode  # type: ignore[arg-type]


# --- AmlCompute: submit, attach, fail, cancel -----------------------------------------------


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeMLClient]:
    client = FakeMLClient(tmp_path / "uploads", compute="gpu-or-cpu-cluster")
    yield client
    client.jobs.release()


def make_compute(fake: FakeMLClient, clock: FakeClock | None = None) -> AmlCompute:
    return AmlCompute(
        fake,  # type: ignore[arg-type]
        TARGET,
        workspace=WORKSPACE,
        queue_timeout_seconds=3600,
        run_timeout_seconds=6 * 3600,
        logger=logging.getLogger("test.aml"),
        clock=clock or fake.clock,
        log_drain_seconds=10,
        tags={"prefect_flow_run_id": "flow-run-1"},
    )


def test_parallel_step_is_submitted_as_a_pipeline_job_and_awaited(
    fake: FakeMLClient, run: ParallelRun
) -> None:
    fake.jobs.script(run.spec.job_name, Script(queued_seconds=600, running_seconds=5400))
    result = make_compute(fake).run_parallel_step(run, ENV)
    assert result.status == "Completed"
    assert result.job_name == f"{RUN_ID}-score"
    assert result.outputs == {"parts": f"prediction_parts/{RUN_ID}"}
    assert result.url.startswith(f"https://ml.azure.com/runs/{RUN_ID}-score")
    assert fake.clock.t >= 6000
    submitted = fake.jobs.records[result.job_name].job
    assert isinstance(submitted, PipelineJob)
    assert (submitted.tags or {})["prefect_flow_run_id"] == "flow-run-1"
    assert submitted.jobs["score"].resources.instance_count == 4


def test_restarted_flow_attaches_to_the_parallel_job(fake: FakeMLClient, run: ParallelRun) -> None:
    fake.jobs.create_or_update(build_parallel_run(run, ENV_ID, TARGET, {}))
    fake.clock.t += 60
    result = make_compute(fake).run_parallel_step(run, ENV)
    assert result.status == "Completed"
    assert result.reused
    assert fake.calls["jobs.create_or_update"] == 1


def test_failed_parallel_job_fails_with_its_error_and_studio_url(
    fake: FakeMLClient, run: ParallelRun
) -> None:
    error = "mini-batch failures exceed the error threshold 0"
    fake.jobs.script(run.spec.job_name, Script(outcome=Outcome("Failed", error=error)))
    with pytest.raises(StepFailedError, match=rf"{RUN_ID}-score ended Failed: .*{error}"):
        make_compute(fake).run_parallel_step(run, ENV)


class _Interrupt(FakeClock):
    def sleep(self, seconds: float, wake: object = None) -> None:
        super().sleep(seconds)
        if len(self.sleeps) == 3:
            raise KeyboardInterrupt


def test_cancelled_flow_cancels_the_parallel_job(tmp_path: Path, run: ParallelRun) -> None:
    clock = _Interrupt()
    fake = FakeMLClient(tmp_path / "uploads", clock=clock, compute="gpu-or-cpu-cluster")
    fake.jobs.script(run.spec.job_name, Script(queued_seconds=60, running_seconds=7200))
    with pytest.raises(KeyboardInterrupt):
        make_compute(fake, clock).run_parallel_step(run, ENV)
    assert fake.jobs.cancelled == [f"{RUN_ID}-score"]
    fake.jobs.release()
