"""The train flow's tasks: each a few lines over a backend call.

Tasks take backends as arguments, which Prefect cannot hash, so they do not use
Prefect's input cache; step reuse is keyed on the data instead (flows/reuse.py),
and a resumed run re-attaches to its finished steps (completion markers, AML
job names).

No task retries here: transient faults are retried with back-off inside the
backends, where the call is known (Blob Storage: the storage SDK's policy for
dropped connections, timeouts, 408 and 5xx, including the 503 it throttles
with; Azure ML: 408, 429 and 5xx), and everything else (a missing input, a
failed step, a model that does not verify) fails the same way on every attempt.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.compute.base import (
    Compute,
    EnvironmentRef,
    EnvironmentSpec,
    ModelToRegister,
    Registration,
    StepInput,
    StepResult,
    StepSpec,
    WheelRef,
)
from flows.datastore.base import Datastore
from flows.datastore.transfer import resolve_input
from flows.registry import ModelRef, promote, verify_model
from flows.reuse import run_or_reuse
from flows.settings import Settings
from flows.summary import TrainPlan
from flows.wheel import SOMEMODEL_SOURCE, build_wheel


@task(cache_policy=NO_CACHE)
def check_input(datastore: Datastore, input_path: str) -> StepInput:
    kind, files = resolve_input(datastore, input_path)
    get_run_logger().info("Input %s: %s with %d file(s)", input_path, kind, len(files))
    return StepInput("input_dataset_path", input_path, kind)


@task(cache_policy=NO_CACHE)
def upload_wheel(datastore: Datastore, settings: Settings) -> WheelRef:
    wheel = build_wheel(SOMEMODEL_SOURCE, settings.cache_dir / "wheels")
    if datastore.exists(wheel.datastore_path):
        get_run_logger().info("Wheel %s already uploaded", wheel.datastore_path)
    else:
        datastore.upload_file(wheel.local_path, wheel.datastore_path)
        get_run_logger().info("Uploaded wheel to %s", wheel.datastore_path)
    return wheel


@task(cache_policy=NO_CACHE)
def build_environment(compute: Compute, settings: Settings, wheel: WheelRef) -> EnvironmentRef:
    spec = EnvironmentSpec(
        name=settings.environment_name,
        base_image=settings.base_image,
        pip_packages=settings.pip_packages,
        wheel=wheel,
    )
    return compute.prepare_environment(spec)


@task(cache_policy=NO_CACHE)
def submit_step(
    compute: Compute,
    datastore: Datastore,
    spec: StepSpec,
    environment: EnvironmentRef,
    force_rerun: bool = False,
) -> StepResult:
    return run_or_reuse(
        datastore,
        spec,
        environment,
        lambda: compute.run_step(spec, environment),
        force_rerun=force_rerun,
    )


@task(cache_policy=NO_CACHE)
def verify_model_blob(datastore: Datastore, run_id: str) -> ModelRef:
    model = verify_model(datastore, run_id)
    get_run_logger().info("Verified model %s (sha256 %s)", model.model_path, model.model_sha256)
    return model


@task(cache_policy=NO_CACHE)
def promote_model(datastore: Datastore, model: ModelRef) -> bool:
    return promote(datastore, model)


@task(cache_policy=NO_CACHE)
def write_plan(
    settings: Settings, run_id: str, steps: tuple[StepSpec, ...], input_path: str
) -> TrainPlan:
    """Dry run: write the environment and the jobs as AML YAML; upload and submit nothing."""
    # Imported here: azure.ai.ml takes seconds to import, and only plans and AML runs need it.
    from flows.compute.aml_client import prefect_tags
    from flows.compute.aml_plan import write_plan as write

    wheel = build_wheel(SOMEMODEL_SOURCE, settings.cache_dir / "wheels")
    environment = EnvironmentSpec(
        settings.environment_name, settings.base_image, settings.pip_packages, wheel
    )
    plan = write(
        settings, settings.plan_dir / run_id, environment, steps, input_path, prefect_tags()
    )
    get_run_logger().info(
        "Dry run: wrote %d Azure ML definitions to %s; nothing was submitted",
        len(plan.files()),
        plan.folder,
    )
    return plan


@task(cache_policy=NO_CACHE)
def register_model(compute: Compute, model: ModelRef) -> Registration:
    """Record the verified model in the compute's registry (SOMEMODEL_AML_REGISTER_MODEL)."""
    folder = model.model_path.rsplit("/", 1)[0]
    return compute.register_model(
        ModelToRegister(model.run_id, folder, model.model_sha256, model.metrics)
    )
