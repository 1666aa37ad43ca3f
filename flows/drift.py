"""A scoring run's drift, judged: the score step's `drift.json` against the threshold.

Nothing here imports Prefect; flows/score.py wraps these in tasks. The step
measures (PSI per feature and for the predicted classes, shares outside the
training range, missing rates); this module decides what counts as drift
(`SOMEMODEL_DRIFT_PSI_THRESHOLD`, above the sampling-noise floor) and says it
in one line, a table and a markdown section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flows.datastore.base import Datastore
from flows.ledger import drift_report_path
from somemodel.artifacts import NO_TRAINING_PROFILE, ArtifactError, DriftReport
from somemodel.profile import ClassDrift, FeatureDrift

NO_DRIFT_REPORT = "no drift report"
COMPARED = "compared"
_BAR_WIDTH = 20
_SHOWN_FEATURES = 5


class DriftReportError(ValueError):
    """A drift report exists but cannot be read; the message names it."""


def read_drift_report(datastore: Datastore, run_id: str) -> DriftReport | None:
    """The drift report of predictions run `run_id`; None for a run scored before reports."""
    path = drift_report_path(run_id)
    versioned = datastore.read_versioned(path)
    if versioned is None:
        return None
    try:
        return DriftReport.from_json(versioned.text, f"{path!r} in the {datastore.describe()}")
    except ArtifactError as exc:
        raise DriftReportError(str(exc)) from exc


def bar(value: float, scale: float) -> str:
    """`value` as a bar of up to 20 blocks, full at `scale` (longer values are cut, with +)."""
    if scale <= 0:
        return ""
    blocks = round(min(value / scale, 1.0) * _BAR_WIDTH)
    return "█" * blocks + ("+" if value > scale else "")


def _code(text: str) -> str:
    """`text` as inline code; nothing for an empty bar (an empty code span shows two backticks)."""
    return f"`{text}`" if text else ""


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@dataclass(frozen=True)
class DriftCheck:
    """A run's drift measures and what the threshold makes of them."""

    run_id: str
    status: str  # COMPARED, NO_TRAINING_PROFILE or NO_DRIFT_REPORT
    threshold: float
    rows: int = 0
    features: tuple[FeatureDrift, ...] = ()
    classes: ClassDrift | None = None

    @property
    def drifted_features(self) -> tuple[FeatureDrift, ...]:
        return tuple(f for f in self.features if f.drifted(self.threshold))

    @property
    def class_drift(self) -> bool:
        return self.classes is not None and self.classes.drifted(self.threshold)

    @property
    def drifted(self) -> bool:
        return bool(self.drifted_features) or self.class_drift

    @property
    def max_psi(self) -> float | None:
        return max((f.psi for f in self.features), default=None)

    def to_result(self) -> dict[str, Any]:
        """The verdict for the run's JSON result: drifted or not, why, and each feature's PSI."""
        return {
            "status": self.status,
            "drifted": self.drifted,
            "threshold": self.threshold,
            "summary": self.summary_line(),
            "drifted_features": [f.name for f in self.drifted_features],
            "classes_drifted": self.class_drift,
            "psi": {f.name: round(f.psi, 6) for f in self.features},
        }

    def summary_line(self) -> str:
        """One line for the run's state message, the CLI and the notification."""
        if self.status == NO_TRAINING_PROFILE:
            return (
                "drift not measured: the model has no training profile (trained before "
                "profiles were recorded; retrain to get one)"
            )
        if self.status == NO_DRIFT_REPORT:
            return "drift not measured: the predictions have no drift report"
        if self.drifted:
            parts = [f"{f.name} (PSI {f.psi:.2f})" for f in self.drifted_features[:_SHOWN_FEATURES]]
            if len(self.drifted_features) > _SHOWN_FEATURES:
                parts.append(f"{len(self.drifted_features) - _SHOWN_FEATURES} more features")
            if self.class_drift and self.classes is not None:
                parts.append(f"predicted classes (PSI {self.classes.psi:.2f})")
            return (
                f"DRIFT: {', '.join(parts)} above the threshold {self.threshold:g} "
                f"({self.rows} rows scored; predictions written)"
            )
        worst = max(self.features, key=lambda f: f.psi, default=None)
        largest = f"largest feature PSI {worst.psi:.3f} ({worst.name})" if worst else "no features"
        classes = f", classes {self.classes.psi:.3f}" if self.classes is not None else ""
        return f"no drift: {largest}{classes}, threshold {self.threshold:g}"

    def table(self) -> list[dict[str, Any]]:
        """One row per feature (and one for the predicted classes), for a table artifact."""
        rows: list[dict[str, Any]] = [
            {
                "feature": f.name,
                "psi": round(f.psi, 4),
                "noise_floor": round(f.noise_floor, 4),
                "drifted": f.drifted(self.threshold),
                "outside_training_range": f"{f.out_of_range_share:.2%}",
                "training_range": f"{_number(f.training_min)} .. {_number(f.training_max)}",
                "scored_range": f"{_number(f.minimum)} .. {_number(f.maximum)}",
                "missing_rate": f"{f.training_missing_rate:.2%} -> {f.missing_rate:.2%}",
            }
            for f in self.features
        ]
        if self.classes is not None:
            rows.append(
                {
                    "feature": "(predicted class)",
                    "psi": round(self.classes.psi, 4),
                    "noise_floor": round(self.classes.noise_floor, 4),
                    "drifted": self.class_drift,
                    "outside_training_range": "",
                    "training_range": "",
                    "scored_range": "",
                    "missing_rate": "",
                }
            )
        return rows

    def to_markdown(self) -> str:
        """The drift section of the run summary: one bar per feature, and the class shares."""
        lines = ["", "## Drift", "", f"**{self.summary_line()}**"]
        if self.status != COMPARED:
            return "\n".join(lines)
        scale = max(2 * self.threshold, self.max_psi or 0.0)
        lines += [
            "",
            f"PSI against the training profile (threshold {self.threshold:g}; a bar is full "
            f"at {scale:.2g}):",
            "",
            "| feature | PSI | | noise floor | outside training range | drifted |",
            "|---|---|---|---|---|---|",
        ]
        for f in self.features:
            flag = "**yes**" if f.drifted(self.threshold) else "no"
            lines.append(
                f"| {f.name} | {f.psi:.4f} | {_code(bar(f.psi, scale))} | {f.noise_floor:.4f} | "
                f"{f.out_of_range_share:.2%} | {flag} |"
            )
        if self.classes is not None:
            training = dict(self.classes.training_shares)
            lines += [
                "",
                f"Predicted classes against the training class balance: PSI "
                f"{self.classes.psi:.4f}" + (" (**drifted**)" if self.class_drift else ""),
                "",
                "| class | training share | predicted share | |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {c} | {training.get(c, 0.0):.1%} | {share:.1%} | {_code(bar(share, 1.0))} |"
                for c, share in self.classes.predicted_shares
            ]
        return "\n".join(lines)


def check_drift_report(report: DriftReport | None, run_id: str, threshold: float) -> DriftCheck:
    """Judge `report` (None: the run has none) against `threshold`."""
    if report is None:
        return DriftCheck(run_id, NO_DRIFT_REPORT, threshold)
    if report.training is None:
        return DriftCheck(run_id, NO_TRAINING_PROFILE, threshold, rows=report.scored.rows)
    return DriftCheck(
        run_id,
        COMPARED,
        threshold,
        rows=report.scored.rows,
        features=report.features,
        classes=report.classes,
    )
