"""The run summaries: what a run did, as a value and as the Prefect artifact's markdown."""

from __future__ import annotations

from dataclasses import dataclass

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
            f"- promoted to latest: {'yes' if self.promoted else 'no (a newer model is latest)'}",
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
