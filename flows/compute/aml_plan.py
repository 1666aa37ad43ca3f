"""The planning compute: a dry run's backend. Each step becomes Azure ML YAML; nothing runs.

Users review what a run would create in their workspace before paying for it.
The flows run their usual recipe with this compute in place of the real one
(flows/backends.py): every step they submit is recorded as a node of one
pipeline job, `plans/{run_id}/pipeline.yaml`, written by the SDK's own
`dump()`, and a step whose input is an earlier step's output takes it as
`${{parent.jobs.<step>.outputs.<name>}}` (the train node reads the data-prep
node's output). The folder is self-contained and relocatable:

    plans/{run_id}/
      pipeline.yaml        az ml job create -f plans/{run_id}/pipeline.yaml
      environment.yaml     az ml environment create -f ... (the named version real runs use)
      environment/         its build context: Dockerfile + the wheel
      code/<step folder>/  each step's code, copied

`az ml job create -f` (and `load_job`) resolve local paths relative to the
YAML file's folder; the SDK's dump writes them absolute (its `LocalPathField`
always does), so the paths inside the plan folder are rewritten relative to
it after the dump. Building the plan needs no Azure credential and no
workspace: only the pure builders.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from azure.ai.ml.entities import (
    BuildContext,
    Command,
    Environment,
    PipelineJob,
    PipelineJobSettings,
)

from flows.compute.aml_client import prefect_tags
from flows.compute.aml_specs import (
    AmlTarget,
    build_command_job,
    build_environment,
    environment_id,
    environment_version,
)
from flows.compute.base import (
    EnvironmentRef,
    EnvironmentSpec,
    ModelToRegister,
    Registration,
    StepResult,
    StepSpec,
)
from flows.settings import Settings

PLANNED = "Planned"
PIPELINE_FILE = "pipeline.yaml"
ENVIRONMENT_FILE = "environment.yaml"
ENVIRONMENT_DIR = "environment"
CODE_DIR = "code"


class AmlPlanCompute:
    """A `Compute` that writes each step as a node of one AML pipeline job under `plan_dir`."""

    def __init__(
        self,
        target: AmlTarget,
        plan_dir: Path,
        tags: Mapping[str, str] | None = None,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self.target = target
        self.plan_dir = plan_dir
        self.tags = dict(tags or {})
        self.log = logger or logging.getLogger(__name__)
        self._environment: EnvironmentSpec | None = None
        self._env_name, self._env_version = "", ""
        self._nodes: dict[str, Command] = {}
        # datastore output path -> (node, output name): how later steps chain to it.
        self._produced: dict[str, tuple[str, str]] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, logger: logging.Logger | logging.LoggerAdapter | None = None
    ) -> AmlPlanCompute:
        return cls(AmlTarget.from_settings(settings), settings.plan_dir, prefect_tags(), logger)

    def prepare_environment(self, spec: EnvironmentSpec) -> EnvironmentRef:
        """Remember the environment; it is written next to the first step's plan."""
        self._environment = spec
        # The version the AML backend would give it: the hash of the whole image recipe.
        version = environment_version(spec)
        self._env_name, self._env_version = spec.name, version
        return EnvironmentRef(spec.name, version, environment_id(spec.name, version), reused=False)

    def run_step(self, spec: StepSpec, environment: EnvironmentRef) -> StepResult:
        return self.run_steps([spec], environment)[0]

    def run_steps(self, specs: Sequence[StepSpec], environment: EnvironmentRef) -> list[StepResult]:
        """Add the steps to the run's pipeline job and rewrite its YAML; submit nothing."""
        if not specs:
            return []
        folder = self.plan_dir / specs[0].run_id
        env = self._write_environment(folder)
        for spec in specs:
            self._add(folder, spec, env)
        pipeline = self._write_pipeline(folder, specs[0].run_id)
        for spec in specs:
            self.log.info("Dry run: step %s planned in %s; nothing submitted", spec.step, pipeline)
        return [
            StepResult(
                spec.step,
                spec.job_name,
                PLANNED,
                {o.name: o.path for o in spec.outputs},
                url=str(pipeline),
            )
            for spec in specs
        ]

    def register_model(self, model: ModelToRegister) -> Registration:
        return Registration(None, f"dry run: the model of run {model.run_id} was not registered")

    # --- writing -------------------------------------------------------------------------

    def _write_environment(self, folder: Path) -> Environment:
        if self._environment is None:
            raise RuntimeError("prepare_environment() must come before the steps of a plan")
        folder.mkdir(parents=True, exist_ok=True)
        named = build_environment(self._environment, folder / ENVIRONMENT_DIR)
        _dump(named, folder / ENVIRONMENT_FILE, folder)
        # Inline (anonymous, versioned by the build context's hash) in the pipeline, so
        # `az ml job create -f pipeline.yaml` alone builds it; no name: AML ignores it there.
        return Environment(
            description=f"{named.name}:{named.version}, inline in a planned pipeline",
            build=BuildContext(path=str(folder / ENVIRONMENT_DIR), dockerfile_path="Dockerfile"),
            tags=named.tags,
        )

    def _add(self, folder: Path, spec: StepSpec, environment: Environment) -> None:
        code = folder / CODE_DIR / spec.code_dir.name
        shutil.rmtree(code, ignore_errors=True)
        shutil.copytree(spec.code_dir, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        env_id = environment_id(self._env_name, self._env_version)
        node = build_command_job(replace(spec, code_dir=code), env_id, self.target, self.tags)
        node.environment = environment
        node.name = spec.step  # the node's name in the pipeline: `${{parent.jobs.<name>...}}`
        for step_input in spec.inputs:
            producer = self._produced.get(step_input.path.strip("/"))
            if producer is not None:
                upstream, name = producer
                # Attribute assignment binds the input; item assignment would replace it.
                setattr(node.inputs, step_input.name, getattr(self._nodes[upstream].outputs, name))
        self._nodes[spec.step] = node
        for output in spec.outputs:
            self._produced[output.path.strip("/")] = (spec.step, output.name)

    def _write_pipeline(self, folder: Path, run_id: str) -> Path:
        pipeline = PipelineJob(
            name=run_id,
            display_name=f"{run_id} (planned)",
            description=f"The steps of run {run_id}, written by a dry run",
            experiment_name=self.target.experiment_name,
            jobs=dict(self._nodes),
            compute=self.target.compute,
            tags={"run_id": run_id, **self.tags},
            settings=PipelineJobSettings(
                default_compute=self.target.compute, continue_on_step_failure=False
            ),
        )
        path = folder / PIPELINE_FILE
        _dump(pipeline, path, folder)
        return path


def _dump(entity: PipelineJob | Environment, path: Path, folder: Path) -> None:
    """The SDK's `dump()`, then local paths inside `folder` made relative to it."""
    path.unlink(missing_ok=True)
    entity.dump(path)
    data = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(_relative(data, folder.resolve()), sort_keys=False))


def _relative(value: Any, folder: Path) -> Any:
    if isinstance(value, dict):
        return {k: _relative(v, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, folder) for v in value]
    if isinstance(value, str) and os.path.isabs(value) and Path(value).is_relative_to(folder):
        return Path(value).relative_to(folder).as_posix() or "."
    return value
