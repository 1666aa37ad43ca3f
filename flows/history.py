"""The model's weeks, from the datastore alone: training accuracy, drift and class shares.

Nothing here imports Prefect: `python -m flows.report` prints it for a user
without the Prefect UI, and the flows put the same history into their trend
artifacts. Each training run's `metadata.json` and each scoring run's
`manifest.json` and `drift.json` are read where the run ledger lays them out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from flows.datastore.base import Datastore
from flows.drift import (
    COMPARED,
    DriftCheck,
    DriftReportError,
    check_drift_report,
    read_drift_report,
)
from flows.ledger import (
    MODELS_ROOT,
    PREDICTIONS_ROOT,
    RunLedger,
    model_metadata_path,
    parse_time,
    predictions_manifest_path,
)
from somemodel.artifacts import (
    MANIFEST_FILENAME,
    METADATA_FILENAME,
    ArtifactError,
    ModelMetadata,
    PredictionsManifest,
)

# A run's record: what `_finished_since` parses.
Record = TypeVar("Record", ModelMetadata, PredictionsManifest)

_SPARKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class TrainingPoint:
    run_id: str
    created_at: datetime
    accuracy: float | None
    rows: int


@dataclass(frozen=True)
class ScoringPoint:
    run_id: str
    created_at: datetime
    model_run_id: str
    rows: int
    drift: DriftCheck
    class_shares: tuple[tuple[str, float], ...]


def sparkline(values: list[float | None], high: float | None = None) -> str:
    """`values` as one block character each, scaled from 0 to `high` (default: the largest)."""
    known = [v for v in values if v is not None]
    top = high if high is not None else max(known, default=0.0)
    if top <= 0:
        return "".join(" " if v is None else _SPARKS[0] for v in values)
    return "".join(
        " " if v is None else _SPARKS[min(len(_SPARKS) - 1, int(v / top * (len(_SPARKS) - 1)))]
        for v in values
    )


def _read(datastore: Datastore, path: str) -> str | None:
    versioned = datastore.read_versioned(path)
    return versioned.text if versioned is not None else None


def _finished_since(
    datastore: Datastore,
    root: str,
    filename: str,
    path_of: Callable[[str], str],
    parse: Callable[[str, str], Record],
    since: datetime,
) -> Iterator[tuple[str, Record, datetime]]:
    """(run id, its parsed `filename`, created at) of each finished run under `root` since `since`.

    A run whose file is missing or does not parse is left out: verification says
    why when that run is used.
    """
    for run_id in RunLedger(datastore).finished_runs(root, filename):
        path = path_of(run_id)
        text = _read(datastore, path)
        if text is None:
            continue
        try:
            record = parse(text, path)
        except ArtifactError:
            continue
        created = parse_time(record.created_at)
        if created is not None and created >= since:
            yield run_id, record, created


def training_history(datastore: Datastore, since: datetime) -> list[TrainingPoint]:
    """Every finished training run created since `since`, oldest first."""
    points = []
    for run_id, metadata, created in _finished_since(
        datastore,
        MODELS_ROOT,
        METADATA_FILENAME,
        model_metadata_path,
        ModelMetadata.from_json,
        since,
    ):
        accuracy = metadata.metrics.get("accuracy")
        points.append(
            TrainingPoint(
                run_id,
                created,
                float(accuracy) if isinstance(accuracy, int | float) else None,
                metadata.n_train + metadata.n_test,
            )
        )
    return sorted(points, key=lambda p: p.created_at)


def scoring_history(datastore: Datastore, since: datetime, threshold: float) -> list[ScoringPoint]:
    """Every finished scoring run created since `since`, oldest first, with its drift."""
    points = []
    for run_id, manifest, created in _finished_since(
        datastore,
        PREDICTIONS_ROOT,
        MANIFEST_FILENAME,
        predictions_manifest_path,
        PredictionsManifest.from_json,
        since,
    ):
        try:
            report = read_drift_report(datastore, run_id)
        except DriftReportError:
            report = None
        shares: tuple[tuple[str, float], ...] = ()
        if report is not None and report.scored.rows:
            shares = tuple((c, n / report.scored.rows) for c, n in report.scored.classes)
        points.append(
            ScoringPoint(
                run_id,
                created,
                manifest.model_run_id,
                manifest.output_rows,
                check_drift_report(report, run_id, threshold),
                shares,
            )
        )
    return sorted(points, key=lambda p: p.created_at)


@dataclass(frozen=True)
class History:
    since: datetime
    threshold: float
    training: tuple[TrainingPoint, ...]
    scoring: tuple[ScoringPoint, ...]

    def _classes(self) -> list[str]:
        return sorted({c for p in self.scoring for c, _ in p.class_shares})

    def to_text(self) -> str:
        """The history as plain text, for a terminal."""
        lines = [f"Since {self.since:%Y-%m-%d} (drift threshold: PSI {self.threshold:g})", ""]
        lines.append(f"Training runs ({len(self.training)}):")
        if not self.training:
            lines.append("  none")
        for t in self.training:
            accuracy = "n/a" if t.accuracy is None else f"{t.accuracy:.4f}"
            lines.append(
                f"  {t.created_at:%Y-%m-%d}  {t.run_id}  accuracy {accuracy}  rows {t.rows}"
            )
        if self.training:
            spark = sparkline([t.accuracy for t in self.training], high=1.0)
            lines.append(f"  accuracy trend: {spark}")
        lines += ["", f"Scoring runs ({len(self.scoring)}):"]
        if not self.scoring:
            lines.append("  none")
        classes = self._classes()
        for s in self.scoring:
            shares = dict(s.class_shares)
            share_text = " ".join(f"{c} {shares.get(c, 0.0):.0%}" for c in classes)
            lines.append(
                f"  {s.created_at:%Y-%m-%d}  {s.run_id}  rows {s.rows}  "
                f"{s.drift.summary_line()}" + (f"  | {share_text}" if s.class_shares else "")
            )
        if self.scoring:
            spark = sparkline([s.drift.max_psi for s in self.scoring])
            lines.append(f"  largest PSI trend: {spark}")
        return "\n".join(lines) + "\n"

    def to_markdown(self) -> str:
        """The history as the trend artifact: one table row per run, and trend lines."""
        lines = [f"# The model's weeks since {self.since:%Y-%m-%d}", ""]
        if self.training:
            accuracies = [t.accuracy for t in self.training]
            lines += [
                f"Training accuracy (held-out): `{sparkline(accuracies, high=1.0)}`",
                "",
                "| trained | run | accuracy | rows |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {t.created_at:%Y-%m-%d %H:%M} | `{t.run_id}` | "
                f"{'n/a' if t.accuracy is None else f'{t.accuracy:.4f}'} | {t.rows} |"
                for t in self.training
            ]
            lines.append("")
        classes = self._classes()
        if self.scoring:
            psis = [s.drift.max_psi for s in self.scoring]
            lines += [
                f"Largest feature PSI per scoring run (threshold {self.threshold:g}): "
                f"`{sparkline(psis, high=max([self.threshold * 2, *(p or 0 for p in psis)]))}`",
                "",
                "| scored | run | rows | largest PSI | drifted | "
                + " | ".join(f"{c} share" for c in classes)
                + " |",
                "|---|---|---|---|---|" + "---|" * len(classes),
            ]
            for s in self.scoring:
                shares = dict(s.class_shares)
                if s.drift.status != COMPARED:
                    verdict = s.drift.status
                elif s.drift.drifted:
                    names = [f.name for f in s.drift.drifted_features]
                    names += ["classes"] if s.drift.class_drift else []
                    verdict = "**" + ", ".join(names) + "**"
                else:
                    verdict = "no"
                largest = s.drift.max_psi
                lines.append(
                    f"| {s.created_at:%Y-%m-%d %H:%M} | `{s.run_id}` | {s.rows} | "
                    f"{'-' if largest is None else f'{largest:.4f}'} | {verdict} | "
                    + " | ".join(f"{shares[c]:.1%}" if c in shares else "-" for c in classes)
                    + " |"
                )
        if not self.training and not self.scoring:
            lines.append("No training or scoring runs in this period.")
        return "\n".join(lines)


def read_history(datastore: Datastore, *, now: datetime, weeks: int, threshold: float) -> History:
    """The training and scoring runs of the last `weeks` weeks before `now`."""
    since = now - timedelta(weeks=weeks)
    return History(
        since,
        threshold,
        tuple(training_history(datastore, since)),
        tuple(scoring_history(datastore, since, threshold)),
    )


def artifact_key(kind: str, deployment_name: str | None) -> str:
    """`{kind}-{deployment}`: one artifact key per deployment, so Prefect keeps each
    deployment's versions as one history (`adhoc` for runs not started from one).

    Keys may hold only lower-case letters, digits and dashes.
    """
    name = (deployment_name or "adhoc").lower()
    slug = "".join(ch if ch.isalnum() and ch.isascii() else "-" for ch in name).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return f"{kind}-{slug or 'adhoc'}"
