"""The run summaries: what a run did, as a value and as the Prefect artifact's markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flows.compute.base import EnvironmentRef, StepResult
from flows.registry import ModelRef


@dataclass(frozen=True)
class TrainSummary:
    run_id: str
    input_path: str
    environment: EnvironmentRef
    steps: tuple[StepResult, ...]
    model: ModelRef
    promoted: bool

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
        return "\n".join(lines)


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
class PlannedJob:
    step: str
    job_name: str
    yaml_path: Path


@dataclass(frozen=True)
class TrainPlan:
    """What a dry run wrote: where, the environment and the jobs, in submission order."""

    run_id: str
    input_path: str
    folder: Path
    environment: str
    environment_yaml: Path
    jobs: tuple[PlannedJob, ...]

    def files(self) -> list[Path]:
        return [self.environment_yaml, *(job.yaml_path for job in self.jobs)]

    def to_markdown(self) -> str:
        lines = [
            f"# Plan for training run `{self.run_id}` (dry run: nothing submitted)",
            "",
            f"- input: `{self.input_path}`",
            f"- folder: `{self.folder}`",
            f"- environment `{self.environment}`: `{self.environment_yaml.name}`"
            " (created only if that version does not exist)",
            "",
            "| step | job name | definition |",
            "|---|---|---|",
        ]
        lines += [f"| {j.step} | `{j.job_name}` | `{j.yaml_path.name}` |" for j in self.jobs]
        return "\n".join(lines)
