"""The AML job and environment specs, serialised by the SDK itself: what would be sent."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from azure.ai.ml import load_environment, load_job

from flows.compute import aml_specs
from flows.compute.aml_specs import (
    AmlTarget,
    build_command_job,
    build_environment,
    dockerfile,
    environment_id,
    environment_version,
    shell_join,
)
from flows.compute.base import EnvironmentSpec, StepSpec, WheelRef
from flows.datastore.base import InputKind
from flows.plan import (
    STEPS_DIR,
    data_prep_step,
    merge_step,
    score_shard_steps,
    score_step,
    train_step,
)
from flows.settings import Settings
from flows.step_lock import read_step_lock

RUN_ID = "train-2026-11-23-1a2b3c4d"
TARGET = AmlTarget("workspaceblobstore", "cpu-cluster", "somemodel", 21600)
ENV_ID = environment_id("somemodel-env", "0123456789abcdef")
TAGS = {"prefect_flow_run_id": "f1", "prefect_flow_run_url": "http://prefect/runs/f1"}
SECRET = "s3cr3t-value-that-must-not-leak"
DS = "azureml://datastores/workspaceblobstore/paths"


def rest(job: object) -> dict:
    """The job's REST body, as `jobs.create_or_update` would send it."""
    standalone = job._to_job() if hasattr(job, "_to_job") else job  # type: ignore[attr-defined]
    return standalone._to_rest_object().as_dict()


@pytest.fixture
def prep_spec() -> StepSpec:
    return data_prep_step(RUN_ID, "raw/2026-11-23.csv", "uri_file", "species")


@pytest.fixture
def train_spec(prep_spec: StepSpec) -> StepSpec:
    prepared = prep_spec.output("output_dataframe_path").path
    return train_step(RUN_ID, prepared, "species", "raw/2026-11-23.csv")


def test_data_prep_job_as_sent(prep_spec: StepSpec) -> None:
    body = rest(build_command_job(prep_spec, ENV_ID, TARGET, TAGS))
    props = body["properties"]
    assert body["name"] == f"{RUN_ID}-data-prep"
    assert props["jobType"] == "Command"
    assert props["command"] == (
        "python run_data_prep.py"
        " --input-dataset-path ${{inputs.input_dataset_path}}"
        " --output-dataframe-path ${{outputs.output_dataframe_path}}"
        " --target-col species"
        " --input-path raw/2026-11-23.csv"
    )
    assert props["codeId"] == str(STEPS_DIR / "data_prep")
    assert props["computeId"] == "cpu-cluster"
    assert props["experimentName"] == "somemodel"
    assert props["environmentId"] == "azureml:somemodel-env:0123456789abcdef"
    assert props["inputs"]["input_dataset_path"] == {
        "uri": f"{DS}/raw/2026-11-23.csv",
        "mode": "Download",
        "jobInputType": "uri_file",
    }
    assert props["outputs"]["output_dataframe_path"] == {
        "uri": f"{DS}/prepared_dataframes/{RUN_ID}/",
        "mode": "Upload",
        "jobOutputType": "uri_folder",
    }
    assert props["tags"] == {"run_id": RUN_ID, "step": "data_prep", **TAGS}
    assert props["limits"]["timeout"] == "PT6H"


def test_train_job_reads_the_data_prep_output(prep_spec: StepSpec, train_spec: StepSpec) -> None:
    prep = rest(build_command_job(prep_spec, ENV_ID, TARGET, TAGS))["properties"]
    train = rest(build_command_job(train_spec, ENV_ID, TARGET, TAGS))["properties"]
    assert (
        train["inputs"]["training_dataframe"]["uri"]
        == (prep["outputs"]["output_dataframe_path"]["uri"])
    )
    assert train["inputs"]["training_dataframe"]["jobInputType"] == "uri_folder"
    assert train["outputs"]["trained_model"]["uri"] == f"{DS}/trained_models/{RUN_ID}/"
    assert train["codeId"] == str(STEPS_DIR / "train")
    assert "--run-id " + RUN_ID in train["command"]
    assert train["environmentId"] == prep["environmentId"]


def test_command_line_is_the_local_backends(train_spec: StepSpec) -> None:
    """Same flags in the same order as the local backend, placeholders for the paths."""
    body = rest(build_command_job(train_spec, ENV_ID, TARGET, TAGS))
    local = train_spec.command(
        {"training_dataframe": "${{inputs.training_dataframe}}"},
        {"trained_model": "${{outputs.trained_model}}"},
    )
    assert body["properties"]["command"] == " ".join(local)


def test_values_are_shell_quoted_but_placeholders_stay_bare() -> None:
    argv = ["python", "s.py", "--a", "${{inputs.a}}", "--col", "petal width; rm -rf /"]
    assert shell_join(argv) == "python s.py --a ${{inputs.a}} --col 'petal width; rm -rf /'"


def test_job_yaml_round_trips_through_the_sdk(prep_spec: StepSpec, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    build_command_job(prep_spec, ENV_ID, TARGET, TAGS)._to_job().dump(path)
    loaded = load_job(path)
    assert loaded.name == f"{RUN_ID}-data-prep"
    assert loaded.inputs["input_dataset_path"].path == f"{DS}/raw/2026-11-23.csv"
    assert str(loaded.environment).endswith("somemodel-env:0123456789abcdef")


@pytest.fixture
def env_spec(tmp_path: Path) -> EnvironmentSpec:
    wheel = tmp_path / "dist" / "somemodel-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"PK wheel bytes")
    ref = WheelRef(wheel, "cd" * 32, f"wheels/{'cd' * 32}/{wheel.name}")
    return EnvironmentSpec(
        "somemodel-env", "mcr.microsoft.com/azureml/img:1", ("pandas==3.1.1",), ref
    )


def test_environment_is_a_build_context_with_the_wheel(
    env_spec: EnvironmentSpec, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    env = build_environment(env_spec, context)
    body = env._to_rest_object().as_dict()
    assert env.name == "somemodel-env"
    assert env.version == environment_version(env_spec)
    assert body["properties"]["build"] == {
        "contextUri": str(context),
        "dockerfilePath": "Dockerfile",
    }
    assert "image" not in body["properties"]
    assert body["properties"]["tags"]["wheel_sha256"] == "cd" * 32
    assert sorted(p.name for p in context.iterdir()) == [
        "Dockerfile",
        "somemodel-0.1.0-py3-none-any.whl",
    ]
    dockerfile = (context / "Dockerfile").read_text()
    assert dockerfile.splitlines()[1] == "FROM mcr.microsoft.com/azureml/img:1"
    assert "COPY somemodel-0.1.0-py3-none-any.whl /tmp/wheels/" in dockerfile
    assert "        pandas==3.1.1 \\\n" in dockerfile
    assert "        /tmp/wheels/somemodel-0.1.0-py3-none-any.whl \\\n" in dockerfile


def test_environment_yaml_round_trips(env_spec: EnvironmentSpec, tmp_path: Path) -> None:
    build_environment(env_spec, tmp_path / "context").dump(tmp_path / "env.yaml")
    loaded = load_environment(tmp_path / "env.yaml")
    assert (loaded.name, loaded.version) == ("somemodel-env", environment_version(env_spec))
    assert loaded.build.dockerfile_path == "Dockerfile"


def test_no_secret_reaches_any_spec(
    env_spec: EnvironmentSpec, prep_spec: StepSpec, tmp_path: Path
) -> None:
    settings = Settings(
        blob_connection_string=f"AccountName=a;AccountKey={SECRET}",
        aml_tenant_id="t",
        aml_client_id="c",
        aml_client_secret=SECRET,
    )
    target = AmlTarget.from_settings(settings)
    env = build_environment(env_spec, tmp_path / "context")
    job = build_command_job(prep_spec, ENV_ID, target, TAGS)
    sent = json.dumps([env._to_rest_object().as_dict(), rest(job)])
    written = "".join(p.read_text(errors="replace") for p in (tmp_path / "context").iterdir())
    for text in (sent, written):
        assert SECRET not in text
        assert "sig=" not in text
        assert "AccountKey" not in text


@pytest.mark.parametrize(
    ("kind", "path", "mode"),
    [
        ("uri_folder", "raw/week-48", "ReadOnlyMount"),
        ("uri_file", "raw/week-48/mon.csv", "Download"),
    ],
)
def test_a_score_step_mounts_a_folder_and_downloads_a_file(
    kind: InputKind, path: str, mode: str
) -> None:
    """A folder of many weeks is mounted: the step opens only the files it scores (the new
    ones); the model folder and a single file are downloaded whole, as before.
    """
    spec = score_step("score-2026-11-23-1a2b3c4d", RUN_ID, path, kind, "id")
    props = rest(build_command_job(spec, ENV_ID, TARGET, TAGS))["properties"]
    assert props["inputs"]["input_data"]["mode"] == mode
    assert props["inputs"]["input_data"]["jobInputType"] == kind
    assert props["inputs"]["model"]["mode"] == "Download"


def test_score_shards_are_command_jobs_over_the_same_folder() -> None:
    run_id = "score-2026-11-23-1a2b3c4d"
    specs = score_shard_steps(run_id, RUN_ID, "raw/week-48", "id", 3)
    bodies = [rest(build_command_job(spec, ENV_ID, TARGET, TAGS)) for spec in specs]
    assert [b["name"] for b in bodies] == [f"{run_id}-score-{k}" for k in range(3)]
    for k, body in enumerate(bodies):
        props = body["properties"]
        assert props["jobType"] == "Command"
        # Mounted: each shard reads its own files, not a download of the whole folder.
        assert props["inputs"]["input_data"] == {
            "uri": f"{DS}/raw/week-48/", "mode": "ReadOnlyMount", "jobInputType": "uri_folder"
        }  # fmt: skip
        assert props["inputs"]["model"]["uri"] == f"{DS}/trained_models/{RUN_ID}/"
        assert props["outputs"]["predictions"]["uri"] == (
            f"{DS}/prediction_parts/{run_id}/shard-{k}/"
        )
        assert props["command"].startswith("python run_score.py --model ${{inputs.model}}")
        assert props["command"].endswith(f"--shard-index {k} --shard-count 3")
        assert props["environmentId"] == ENV_ID
    merge = rest(build_command_job(
        merge_step(run_id, [s.outputs[0].path for s in specs], 7), ENV_ID, TARGET, TAGS
    ))  # fmt: skip
    assert merge["name"] == f"{run_id}-score-merge"
    assert merge["properties"]["command"] == (
        "python run_merge.py --shard-0 ${{inputs.shard_0}} --shard-1 ${{inputs.shard_1}}"
        " --shard-2 ${{inputs.shard_2}} --predictions ${{outputs.predictions}}"
        f" --run-id {run_id} --expected-files 7"
    )
    assert merge["properties"]["inputs"]["shard_2"]["uri"] == (
        f"{DS}/prediction_parts/{run_id}/shard-2/"
    )


# --- a reproducible image -------------------------------------------------------------


def test_the_image_installs_exactly_the_pinned_set(
    env_spec: EnvironmentSpec, tmp_path: Path
) -> None:
    spec = replace(env_spec, pip_packages=Settings().pip_packages)
    text = dockerfile(spec)
    # Every package pinned, nothing resolved at build time, and the set checked.
    assert "--no-deps" in text
    assert "uv pip check" in text
    for requirement in (*read_step_lock(), *read_step_lock(aml_specs.TRACKING_LOCK)):
        assert f"        {requirement} \\\n" in text
    for name in ("mlflow-skinny", "azureml-mlflow"):
        assert f"        {name}==" in text


@pytest.mark.parametrize(
    "change",
    ["base_image", "python", "uv", "template", "package", "wheel"],
)
def test_the_environment_version_changes_with_anything_the_image_is_built_from(
    env_spec: EnvironmentSpec, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    before = environment_version(env_spec)
    spec = env_spec
    if change == "base_image":
        spec = replace(env_spec, base_image=env_spec.base_image + "-other")
    elif change == "python":
        monkeypatch.setattr(aml_specs, "PYTHON_VERSION", "3.12")
    elif change == "uv":
        monkeypatch.setattr(aml_specs, "UV_IMAGE", "ghcr.io/astral-sh/uv:0.14.0")
    elif change == "template":
        monkeypatch.setattr(aml_specs, "VENV", "/opt/other-env")
    elif change == "package":
        spec = replace(env_spec, pip_packages=("pandas==3.1.0",))
    else:
        spec = replace(env_spec, wheel=replace(env_spec.wheel, sha256="ef" * 32))
    assert environment_version(spec) != before


def test_the_default_base_image_is_pinned_by_digest() -> None:
    assert "@sha256:" in Settings().base_image
    with pytest.raises(ValueError, match="not pinned by digest"):
        Settings(
            compute="aml",
            datastore="blob",
            blob_account_url="https://acct.blob.core.windows.net",
            aml_subscription_id="sub",
            aml_resource_group="rg",
            aml_workspace="ws",
            base_image="mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest",
        )


@pytest.mark.parametrize("step", ["data_prep", "train", "score"])
def test_caches_are_not_part_of_the_code_snapshot(step: str, tmp_path: Path) -> None:
    from azure.ai.ml._utils._asset_utils import get_content_hash, get_ignore_file

    code = tmp_path / step
    shutil.copytree(STEPS_DIR / step, code, ignore=shutil.ignore_patterns("__pycache__"))
    before = get_content_hash(str(code), get_ignore_file(str(code)))
    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"cache")
    (code / ".pytest_cache").mkdir()
    (code / ".pytest_cache" / "README.md").write_text("cache")
    # Same hash: the SDK finds the uploaded snapshot and uploads nothing.
    assert get_content_hash(str(code), get_ignore_file(str(code))) == before
