"""The compute seam: run a step script with datastore inputs and outputs.

A `StepSpec` is the whole description of a job: which script in which code
folder, which datastore paths go in and come out, which literal parameters.
The local backend turns it into a subprocess; the AML backend into an
`azure.ai.ml` command job. Both run the same command line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from flows.datastore.base import InputKind


class StepFailedError(RuntimeError):
    """A step ran and failed. The message carries its error output and where to look."""


@dataclass(frozen=True)
class WheelRef:
    """The built `somemodel` wheel: a local file and its content-addressed datastore path."""

    local_path: Path
    sha256: str
    datastore_path: str

    @property
    def filename(self) -> str:
        return self.local_path.name


@dataclass(frozen=True)
class EnvironmentSpec:
    """What the step environment installs; its version is the hash of all of it."""

    name: str
    base_image: str
    pip_packages: tuple[str, ...]
    wheel: WheelRef

    @property
    def version(self) -> str:
        content = json.dumps(
            {
                "base_image": self.base_image,
                "pip_packages": sorted(self.pip_packages),
                "wheel_sha256": self.wheel.sha256,
            },
            sort_keys=True,
        )
        return hashlib.sha256(content.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EnvironmentRef:
    """A ready environment: `name@version`, and where it lives on the backend."""

    name: str
    version: str
    location: str
    reused: bool

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


# How a job gets an input (AML's input modes): "download" copies it onto the node
# before the step starts; "ro_mount" mounts it read-only, so the step reads only
# the files it opens (a score step given a folder of many weeks reads only the
# new files or its shard's). The local compute copies both ways.
InputMode = Literal["download", "ro_mount"]


@dataclass(frozen=True)
class StepInput:
    name: str
    path: str
    kind: InputKind
    mode: InputMode = "download"


@dataclass(frozen=True)
class StepOutput:
    name: str
    path: str


@dataclass(frozen=True)
class StepSpec:
    """One job. Input/output/param names are the script's CLI flags with `_` for `-`."""

    step: str
    run_id: str
    code_dir: Path
    script: str
    inputs: tuple[StepInput, ...]
    outputs: tuple[StepOutput, ...]
    params: Mapping[str, str | int | float] = field(default_factory=dict)
    display_name: str = ""

    @property
    def job_name(self) -> str:
        return f"{self.run_id}-{self.step.replace('_', '-')}"

    def output(self, name: str) -> StepOutput:
        for output in self.outputs:
            if output.name == name:
                return output
        raise KeyError(f"step {self.step!r} has no output {name!r}")

    def command(
        self,
        inputs: Mapping[str, str],
        outputs: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        python: str = "python",
    ) -> list[str]:
        """The step's command line, with each input/output/param value filled in.

        The AML backend passes `${{inputs.x}}` placeholders, the local one local
        paths; the flags and their order are the same.
        """
        argv = [python, self.script]
        values: dict[str, str] = {k: str(v) for k, v in self.params.items()}
        values.update(params or {})
        for name, value in [*inputs.items(), *outputs.items(), *values.items()]:
            argv += [f"--{name.replace('_', '-')}", value]
        return argv


@dataclass(frozen=True)
class StepResult:
    step: str
    job_name: str
    status: str
    outputs: Mapping[str, str]
    url: str
    reused: bool = False
    duration_seconds: float = 0.0
    # The run whose outputs these are: an earlier run's when the step was reused.
    run_id: str = ""


@dataclass(frozen=True)
class ModelToRegister:
    """A verified model to record in the compute's model registry."""

    run_id: str
    # The datastore folder holding the model file and metadata.json.
    folder: str
    model_sha256: str
    metrics: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Registration:
    """What `register_model` did: the registry's id for the model, or why there is none."""

    model_id: str | None
    message: str

    @property
    def registered(self) -> bool:
        return self.model_id is not None


class Compute(Protocol):
    """Everything the flows ask of a compute backend; each backend does all of it.

    Implementations: `LocalCompute` (subprocesses in a cached venv), `AmlCompute`
    (Azure ML command jobs) and `AmlPlanCompute` (a dry run: each step written
    as Azure ML YAML, nothing run). The flows get one from flows/backends.py and
    never ask which it is.
    """

    def prepare_environment(self, spec: EnvironmentSpec) -> EnvironmentRef:
        """Build the environment, or reuse it when `spec.version` already exists."""
        ...

    def run_step(self, spec: StepSpec, environment: EnvironmentRef) -> StepResult:
        """Run the step to completion; raise StepFailedError when it fails."""
        ...

    def run_steps(self, specs: Sequence[StepSpec], environment: EnvironmentRef) -> list[StepResult]:
        """Run independent steps concurrently (a fan-out); results in the order of `specs`.

        When one fails the others are stopped, and its StepFailedError is raised.
        """
        ...

    def register_model(self, model: ModelToRegister) -> Registration:
        """Record a verified model in the backend's registry (idempotent), or say why not."""
        ...
