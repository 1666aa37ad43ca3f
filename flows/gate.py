"""The promotion gate: promote a new model, or keep the current one. Pure; no I/O.

Both models are measured on the same rows (the new run's held-out split), so a
drop in accuracy is the models' difference, not the data's. The gate keeps the
current model when the new one is more than `tolerance` below it, or below
`min_accuracy`; `force` promotes anyway.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    new_accuracy: float | None
    current_accuracy: float | None = None
    current_run_id: str | None = None

    @property
    def state_message(self) -> str:
        return ("promoted: " if self.promote else "not promoted: ") + self.reason

    def to_markdown(self) -> str:
        verdict = "**promoted**" if self.promote else "**not promoted** (latest.json unchanged)"
        lines = ["", "## Promotion gate", "", f"- verdict: {verdict}", f"- why: {self.reason}"]
        if self.current_run_id:
            current = f"{self.current_accuracy:.4f}" if self.current_accuracy is not None else "n/a"
            lines.append(
                f"- current model `{self.current_run_id}` on the same held-out rows: {current}"
            )
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def decide(
    new_accuracy: float | None,
    current_accuracy: float | None,
    *,
    current_run_id: str | None,
    tolerance: float,
    min_accuracy: float,
    force: bool = False,
) -> GateDecision:
    """Promote or keep, and why (the why is what the run's state message shows)."""

    def result(promote: bool, reason: str) -> GateDecision:
        return GateDecision(promote, reason, new_accuracy, current_accuracy, current_run_id)

    if force:
        return result(True, "force_promote is set (the gate was not applied)")
    if new_accuracy is None:
        return result(False, "the new model's metadata has no held-out accuracy")
    if new_accuracy < min_accuracy:
        return result(
            False,
            f"accuracy {_fmt(new_accuracy)} is below the minimum {_fmt(min_accuracy)} "
            "(SOMEMODEL_MIN_ACCURACY)",
        )
    if current_run_id is None:
        return result(True, f"first model (accuracy {_fmt(new_accuracy)})")
    if current_accuracy is None:
        return result(
            True,
            f"accuracy {_fmt(new_accuracy)}; the current model could not be measured on the "
            "same rows (other features), so only the minimum applied",
        )
    if new_accuracy < current_accuracy - tolerance:
        return result(
            False,
            f"accuracy {_fmt(new_accuracy)} vs {_fmt(current_accuracy)} for the current model "
            f"{current_run_id} (tolerance {tolerance:g}, SOMEMODEL_PROMOTION_TOLERANCE)",
        )
    return result(
        True,
        f"accuracy {_fmt(new_accuracy)} vs {_fmt(current_accuracy)} for the current model "
        f"{current_run_id}",
    )
