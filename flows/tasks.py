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

from flows.backends import Backends
from flows.compute.base import (
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
from flows.reuse import run_or_reuse, run_or_reuse_all
from flows.wheel import SOMEMODEL_SOURCE, build_wheel


class RunIncompleteError(RuntimeError):
    """A run stopped after part of its work: the message says what was done and what was not."""


@task(cache_policy=NO_CACHE)
def check_input(datastore: Datastore, input_path: str) -> StepInput:
    """The step input for `input_path`, a file or a folder; DatastoreNotFoundError when it is
    neither.
    """
    kind, files = resolve_input(datastore, input_path)
    get_run_logger().info("Input %s: %s with %d file(s)", input_path, kind, len(files))
    return StepInput("input_dataset_path", input_path, kind)


@task(cache_policy=NO_CACHE)
def upload_wheel(backends: Backends) -> WheelRef:
    """Build the somemodel wheel and upload it once (its path carries its content hash);
    a dry run builds it but uploads nothing.
    """
    wheel = build_wheel(SOMEMODEL_SOURCE, backends.settings.cache_dir / "wheels")
    datastore = backends.datastore
    if backends.dry_run:
        get_run_logger().info("Dry run: wheel %s built, not uploaded", wheel.filename)
    elif datastore.exists(wheel.datastore_path):
        get_run_logger().info("Wheel %s already uploaded", wheel.datastore_path)
    else:
        datastore.upload_file(wheel.local_path, wheel.datastore_path)
        get_run_logger().info("Uploaded wheel to %s", wheel.datastore_path)
    return wheel


@task(cache_policy=NO_CACHE)
def build_environment(backends: Backends, wheel: WheelRef) -> EnvironmentRef:
    """The step environment (base image, pinned packages, the wheel) on the compute; an existing
    version is reused, not rebuilt.
    """
    settings = backends.settings
    spec = EnvironmentSpec(
        name=settings.environment_name,
        base_image=settings.base_image,
        pip_packages=settings.pip_packages,
        wheel=wheel,
    )
    return backends.compute.prepare_environment(spec)


@task(cache_policy=NO_CACHE)
def submit_step(
    backends: Backends, spec: StepSpec, environment: EnvironmentRef, force_rerun: bool = False
) -> StepResult:
    """Run the step on the compute, or reuse an earlier run's identical step (flows/reuse.py)."""
    compute = backends.compute
    if backends.dry_run:  # planned, not run: nothing to reuse, no record to write
        return compute.run_step(spec, environment)
    return run_or_reuse(
        backends.datastore,
        spec,
        environment,
        lambda: compute.run_step(spec, environment),
        force_rerun=force_rerun,
    )


@task(cache_policy=NO_CACHE)
def submit_steps(
    backends: Backends,
    specs: list[StepSpec],
    environment: EnvironmentRef,
    force_rerun: bool = False,
) -> list[StepResult]:
    """`submit_step` for a fan-out: each step reused on its own, the rest run concurrently."""
    compute = backends.compute
    if backends.dry_run:
        return compute.run_steps(specs, environment)
    return run_or_reuse_all(
        backends.datastore,
        specs,
        environment,
        lambda todo: compute.run_steps(todo, environment),
        force_rerun=force_rerun,
    )


@task(cache_policy=NO_CACHE)
def verify_model_blob(datastore: Datastore, run_id: str) -> ModelRef:
    """The model of `run_id`, checked: sha256 matches, it loads and it predicts;
    ModelVerificationError otherwise.
    """
    model = verify_model(datastore, run_id)
    get_run_logger().info("Verified model %s (sha256 %s)", model.model_path, model.model_sha256)
    return model


@task(cache_policy=NO_CACHE)
def register_model(backends: Backends, model: ModelRef) -> Registration:
    """Record the verified model in the compute's registry, when SOMEMODEL_AML_REGISTER_MODEL is on.

    Runs before promotion: a registration that fails leaves latest.json where
    it was, and the error says what was done (trained, verified) and what was not.
    """
    if not backends.settings.aml_register_model:
        return Registration(None, "not registered: SOMEMODEL_AML_REGISTER_MODEL is off")
    folder = model.model_path.rsplit("/", 1)[0]
    try:
        return backends.compute.register_model(
            ModelToRegister(model.run_id, folder, model.model_sha256, model.metrics)
        )
    except Exception as exc:  # re-raised with what was and was not done
        raise RunIncompleteError(
            f"the model of run {model.run_id} was trained and verified ({model.model_path}), "
            f"but registering it failed: {exc}. trained_models/latest.json was not moved. "
            f"Run again with run_id={model.run_id} to retry: finished steps are reused"
        ) from exc


@task(cache_policy=NO_CACHE)
def promote_model(datastore: Datastore, model: ModelRef, registration: Registration) -> bool:
    """Move `trained_models/latest.json` to `model`; False when it already names a newer model.
    A failed write raises RunIncompleteError: the model is trained and verified, not latest.
    """
    try:
        return promote(datastore, model)
    except Exception as exc:  # re-raised with what was and was not done
        raise RunIncompleteError(
            f"the model of run {model.run_id} was trained and verified (registry: "
            f"{registration.message}), "
            f"but moving trained_models/latest.json failed: {exc}. latest.json still names "
            "the previous model"
        ) from exc
