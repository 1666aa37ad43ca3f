"""Plan mode: the environment and every job of a run, as the SDK's own YAML, submitted nowhere.

Users review what a run would create in their workspace before paying for it.
The files are what `az ml environment create -f` / `az ml job create -f` take,
written by the SDK's own `dump()`, next to the environment's build context
(Dockerfile + wheel). Building the plan needs no Azure credential and no
workspace: it uses the pure builders only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flows.compute.aml_specs import (
    AmlTarget,
    build_command_job,
    build_environment,
    environment_id,
)
from flows.compute.base import EnvironmentRef, EnvironmentSpec, StepSpec
from flows.settings import Settings
from flows.summary import PlannedJob, TrainPlan

PLANNED = "Planned"


def write_plan(
    settings: Settings,
    folder: Path,
    environment: EnvironmentSpec,
    steps: tuple[StepSpec, ...],
    input_path: str,
    tags: Mapping[str, str] | None = None,
) -> TrainPlan:
    """Write `environment.yaml` (+ its build context) and one `{job_name}.yaml` per step."""
    if not steps:
        raise ValueError("a plan needs at least one step")
    target = AmlTarget.from_settings(settings)
    folder.mkdir(parents=True, exist_ok=True)
    env = build_environment(environment, folder / "environment")
    env_yaml = folder / "environment.yaml"
    env.dump(env_yaml)
    ref = EnvironmentRef(environment.name, environment.version, str(env_yaml), reused=False)
    env_id = environment_id(ref.name, ref.version)
    jobs = []
    for spec in steps:
        path = folder / f"{spec.job_name}.yaml"
        # `_to_job()` gives the standalone job's YAML (name, experiment), not a pipeline node's.
        build_command_job(spec, env_id, target, tags or {})._to_job().dump(path)
        jobs.append(PlannedJob(spec.step, spec.job_name, path))
    return TrainPlan(steps[0].run_id, input_path, folder, env_id, env_yaml, tuple(jobs))
