"""The run summaries: what a run did, as a value, as the Prefect artifact's markdown, and as
the JSON result an API caller reads (`to_result()`, docs/api.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.compute.base import EnvironmentRef, Registration, StepResult
from flows.gate import GateDecision
from flows.registry import ModelRef


@dataclass(frozen=True)
class TrainSummary:
    run_id: str
    input_path: str
    environment: EnvironmentRef
    steps: tuple[StepResult, ...]
    model: ModelRef
    promoted: bool
    registration: Registration | None = None
    gate: GateDecision | None = None

    artifact_key = "train-summary"
    result_key = "train-result"

    @property
    def description(self) -> str:
        return f"Run {self.run_id}"

    @property
    def promotion_reason(self) -> str:
        """Why the model was promoted or not: the gate's reason, or that a newer one is latest."""
        if self.gate is not None and self.gate.promote != self.promoted:
            return NEWER_IS_LATEST
        if self.gate is not None:
            return self.gate.reason
        return "promoted" if self.promoted else NEWER_IS_LATEST

    def to_result(self) -> dict[str, Any]:
        """The run's result as JSON (docs/api.md, "The result")."""
        model = self.model
        return {
            "run_id": self.run_id,
            "input_path": self.input_path,
            "dry_run": False,
            "model_run_id": model.run_id,
            "model_uri": model.uri,
            "model_path": model.model_path,
            "model_sha256": model.model_sha256,
            "accuracy": model.accuracy,
            "metrics": model.metrics,
            "classes": list(model.classes),
            "features": list(model.feature_names),
            "promoted": self.promoted,
            "promotion_reason": self.promotion_reason,
            "current_model_run_id": self.gate.current_run_id if self.gate else None,
            "current_model_accuracy": self.gate.current_accuracy if self.gate else None,
            "registered_model_id": self.registration.model_id if self.registration else None,
            "environment": self.environment.id,
            "steps": [step_result(step) for step in self.steps],
        }

    def to_markdown(self) -> str:
        lines = [
            f"# Training run `{self.run_id}`",
            "",
            f"- input: `{self.input_path}`",
            f"- environment: `{self.environment.id}`"
            + (" (reused)" if self.environment.reused else " (built)"),
            f"- model: `{self.model.model_path}` ({self.model.uri})",
            f"- model sha256: `{self.model.model_sha256}`",
            "- promoted to latest: "
            + ("yes" if self.promoted else "no (see the promotion gate, or a newer one is latest)"),
            *([f"- model registry: {self.registration.message}"] if self.registration else []),
            "",
            "| step | job | status | reused | link |",
            "|---|---|---|---|---|",
        ]
        for step in self.steps:
            link = f"[open]({step.url})" if step.url else ""
            reused = "yes" if step.reused else "no"
            lines.append(f"| {step.step} | `{step.job_name}` | {step.status} | {reused} | {link} |")
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in _flatten(self.model.metrics)]
        if self.gate is not None:
            lines.append(self.gate.to_markdown())
        return "\n".join(lines)


NEWER_IS_LATEST = (
    "trained_models/latest.json already points at a newer model: the run's log names it"
)


def step_result(step: StepResult) -> dict[str, Any]:
    """A step as JSON: its job, status, whether it was reused (and from which run), its link."""
    return {
        "step": step.step,
        "job_name": step.job_name,
        "status": step.status,
        "reused": step.reused,
        "run_id": step.run_id,
        "url": step.url,
    }


def _flatten(metrics: dict[str, object], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for name, value in metrics.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            rows += _flatten(value, prefix=f"{key}.")
        elif isinstance(value, float):
            rows.append((key, f"{value:.4f}"))
        else:
            rows.append((key, str(value)))
    return rows


@dataclass(frozen=True)
class TrainPlan:
    """What a dry run wrote: the pipeline job (its steps, in submission order) and its folder."""

    run_id: str
    input_path: str
    environment: str
    steps: tuple[StepResult, ...]

    artifact_key = "train-plan"
    result_key = "train-result"

    @property
    def description(self) -> str:
        return f"Dry run {self.run_id}"

    def to_result(self) -> dict[str, Any]:
        """The dry run's result as JSON: where the plan is, and its steps."""
        return {
            "run_id": self.run_id,
            "input_path": self.input_path,
            "dry_run": True,
            "pipeline_yaml": str(self.pipeline_yaml),
            "environment": self.environment,
            "steps": [step_result(step) for step in self.steps],
        }

    @property
    def pipeline_yaml(self) -> Path:
        # The planning compute reports where it wrote each step's pipeline as its URL.
        return Path(self.steps[-1].url)

    @property
    def folder(self) -> Path:
        return self.pipeline_yaml.parent

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.yaml"))

    def to_markdown(self) -> str:
        lines = [
            f"# Plan for training run `{self.run_id}` (dry run: nothing submitted)",
            "",
            f"- input: `{self.input_path}`",
            f"- folder: `{self.folder}`",
            f"- pipeline job: `{self.pipeline_yaml.name}` "
            f"(`az ml job create -f {self.pipeline_yaml}`)",
            f"- environment `{self.environment}` (built from `environment/`)",
            "",
            "| step | job name | status |",
            "|---|---|---|",
        ]
        lines += [f"| {s.step} | `{s.job_name}` | {s.status} |" for s in self.steps]
        return "\n".join(lines)
