"""A scoring run on the datastore: its input, its verified predictions, its summary.

Nothing here imports Prefect; flows/score.py wraps these in tasks.

The score step writes `predictions/{run_id}/predictions.csv` and then, last,
`manifest.json`; a manifest therefore marks a finished output. Verification
counts the CSV's rows by streaming it (a weekly file may not fit in memory) and
checks them, and the model the step used, against the manifest before
`predictions/latest.json` may move.
"""

from __future__ import annotations

import csv
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from flows.compute.base import EnvironmentRef, StepInput, StepResult
from flows.datastore.base import Datastore, DatastoreNotFoundError
from flows.datastore.transfer import resolve_input
from flows.drift import DriftCheck
from flows.ledger import predictions_manifest_path, predictions_path
from flows.registry import ModelRef, read_artifact_record
from flows.summary import step_result
from somemodel.artifacts import PREDICTIONS_FILENAME, PredictionsManifest

_SHOWN_FILES = 5


class ScoreInputError(ValueError):
    """The scoring input names no CSV file; the message says what was found instead."""


class PredictionsVerificationError(RuntimeError):
    """A scoring run's output is missing or inconsistent; `predictions/latest.json` stays."""


def check_score_input(datastore: Datastore, input_path: str) -> tuple[StepInput, list[str]]:
    """The step input for `input_path` (one file, or a folder holding CSVs) and its CSVs.

    A folder counts only its `*.csv` files, as the score step does; a folder
    without any is refused here, before a model is loaded or a job submitted.
    """
    kind, files = resolve_input(datastore, input_path)
    if kind == "uri_folder":
        csvs = [f for f in files if PurePosixPath(f).suffix.lower() == ".csv"]
        if not csvs:
            shown = ", ".join(repr(f) for f in files[:_SHOWN_FILES])
            more = f" and {len(files) - _SHOWN_FILES} more" if len(files) > _SHOWN_FILES else ""
            raise ScoreInputError(
                f"input folder {input_path!r} in the {datastore.describe()} holds no CSV files "
                f"(found {shown}{more}): give a .csv file or a folder of .csv files"
            )
        files = csvs
    return StepInput("input_data", input_path, kind), files


@dataclass(frozen=True)
class PredictionsRef:
    """A verified scoring output: where it is, what made it, how many rows of each class."""

    run_id: str
    predictions_path: str
    uri: str
    model_run_id: str
    model_sha256: str
    rows: int
    inputs: tuple[tuple[str, int], ...]
    class_counts: tuple[tuple[str, int], ...]
    created_at: str

    def pointer(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "predictions_path": self.predictions_path,
            "model_run_id": self.model_run_id,
            "model_sha256": self.model_sha256,
            "rows": self.rows,
            "created_at": self.created_at,
            "promoted_at": datetime.now(UTC).isoformat(),
        }


def count_predictions(path: Path) -> tuple[list[str], int, Counter[str]]:
    """The header, the data-row count and the count per predicted class of a predictions CSV.

    Streams the file in blocks and parses only `predicted_class`, so memory
    stays flat whatever the row count. Parsing (not counting lines) keeps a
    quoted row id with a newline in it one row.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    if "predicted_class" not in header:
        return header, 0, Counter()
    reader = pa_csv.open_csv(
        path,
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            include_columns=["predicted_class"],
            column_types={"predicted_class": pa.string()},
            strings_can_be_null=False,
        ),
    )
    rows = 0
    counts: Counter[str] = Counter()
    for batch in reader:
        rows += batch.num_rows
        for item in pc.value_counts(batch.column(0)).to_pylist():
            counts[str(item["values"])] += int(item["counts"])
    return header, rows, counts


def read_manifest(datastore: Datastore, run_id: str) -> PredictionsManifest:
    """The predictions manifest of `run_id`, parsed by the artifact contract;
    PredictionsVerificationError when it is absent (the score step did not finish) or invalid.
    """
    return read_artifact_record(
        datastore,
        predictions_manifest_path(run_id),
        PredictionsManifest.from_json,
        PredictionsVerificationError,
        f"the score step of run {run_id!r} did not finish",
    )


def verify_predictions(datastore: Datastore, run_id: str, model: ModelRef) -> PredictionsRef:
    """Check that the run's predictions exist, came from `model` and cover every input row.

    The manifest's own consistency (its row count is the sum of its inputs') is
    checked by the artifact contract as it is read.
    """
    manifest = read_manifest(datastore, run_id)
    where = predictions_manifest_path(run_id)
    if manifest.run_id != run_id:
        raise PredictionsVerificationError(
            f"{where!r} belongs to run {manifest.run_id!r}, not {run_id!r}"
        )
    if (manifest.model_run_id, manifest.model_sha256) != (model.run_id, model.model_sha256):
        raise PredictionsVerificationError(
            f"{where!r} says the step used model {manifest.model_run_id!r} (sha256 "
            f"{manifest.model_sha256}), but the flow verified {model.run_id!r} (sha256 "
            f"{model.model_sha256}): the model changed while the run was scoring"
        )
    inputs = tuple((item.path, item.rows) for item in manifest.inputs)
    expected = manifest.output_rows

    path = predictions_path(run_id)
    with tempfile.TemporaryDirectory(prefix="verify-predictions-") as tmp:
        local = Path(tmp) / PREDICTIONS_FILENAME
        try:
            datastore.download_file(path, local)
        except DatastoreNotFoundError as exc:
            raise PredictionsVerificationError(
                f"{path!r} is missing although its manifest exists: {exc}"
            ) from exc
        header, rows, counts = count_predictions(local)

    columns = ["row_id", "predicted_class", *(f"proba_{c}" for c in model.classes)]
    if header != columns:
        raise PredictionsVerificationError(f"{path!r} has columns {header}, expected {columns}")
    if rows != expected:
        raise PredictionsVerificationError(
            f"{path!r} has {rows} rows, but the inputs had {expected} "
            f"({', '.join(f'{p}: {n}' for p, n in inputs)})"
        )
    unknown = sorted(set(counts) - set(model.classes))
    if unknown:
        raise PredictionsVerificationError(
            f"{path!r} predicts classes {unknown} outside the model's {list(model.classes)}"
        )
    return PredictionsRef(
        run_id=run_id,
        predictions_path=path,
        uri=datastore.uri(path),
        model_run_id=model.run_id,
        model_sha256=model.model_sha256,
        rows=rows,
        inputs=inputs,
        class_counts=tuple((c, counts.get(c, 0)) for c in model.classes),
        created_at=manifest.created_at,
    )


@dataclass(frozen=True)
class ScoreSummary:
    run_id: str
    input_path: str
    environment: EnvironmentRef
    step: StepResult
    model: ModelRef
    predictions: PredictionsRef
    promoted: bool
    # The shard steps whose outputs `step` merged (a sharded run only).
    shards: tuple[StepResult, ...] = ()
    drift: DriftCheck | None = None

    artifact_key = "score-summary"
    result_key = "score-result"

    @property
    def description(self) -> str:
        return f"Run {self.run_id}"

    def to_result(self) -> dict[str, Any]:
        """The run's result as JSON (docs/api.md, "The result")."""
        p = self.predictions
        return {
            "run_id": self.run_id,
            "input_path": self.input_path,
            "nothing_new": False,
            "predictions_uri": p.uri,
            "predictions_path": p.predictions_path,
            # An earlier run's id when its predictions were reused (same files, model, code).
            "predictions_run_id": p.run_id,
            "rows": p.rows,
            "files_scored": [{"path": path, "rows": rows} for path, rows in p.inputs],
            "class_counts": dict(p.class_counts),
            "model_run_id": self.model.run_id,
            "model_uri": self.model.uri,
            "model_sha256": self.model.model_sha256,
            "promoted": self.promoted,
            "environment": self.environment.id,
            "steps": [step_result(step) for step in (*self.shards, self.step)],
            "drift": self.drift.to_result() if self.drift is not None else None,
        }

    def distribution(self) -> str:
        """`setosa 10, versicolor 12, ...` (or `none` for zero rows)."""
        if not self.predictions.rows:
            return "none"
        return ", ".join(f"{c} {n}" for c, n in self.predictions.class_counts)

    def to_markdown(self) -> str:
        p = self.predictions
        rows_line = (
            f"- rows scored: **{p.rows}**"
            if p.rows
            else "- rows scored: **0**: the input has no data rows (header only or empty), "
            "so the predictions file has only its header"
        )
        lines = [
            f"# Scoring run `{self.run_id}`",
            "",
            *([f"**{self.drift.summary_line()}**", ""] if self.drift is not None else []),
            rows_line,
            f"- input: `{self.input_path}`",
            f"- model: training run `{self.model.run_id}` (`{self.model.model_path}`)",
            f"- model sha256: `{self.model.model_sha256}` (verified before scoring)",
            f"- predictions: `{p.predictions_path}` ({p.uri})"
            + (
                f", reused from run `{p.run_id}` (same input files, model and step code)"
                if p.run_id != self.run_id
                else ""
            ),
            f"- environment: `{self.environment.id}`"
            + (" (reused)" if self.environment.reused else " (built)"),
            *(
                f"- shard: `{shard.job_name}` {shard.status}"
                + (f" ([open]({shard.url}))" if shard.url else "")
                + (f", reused from run `{shard.run_id}`" if shard.run_id != self.run_id else "")
                for shard in self.shards
            ),
            f"- step: `{self.step.job_name}` {self.step.status}"
            + (f" ([open]({self.step.url}))" if self.step.url else ""),
            "- predictions/latest.json moved: "
            + ("yes" if self.promoted else "no (a newer scoring run is latest)"),
            "",
            "| class | rows | share |",
            "|---|---|---|",
        ]
        for cls, count in p.class_counts:
            share = f"{count / p.rows:.1%}" if p.rows else "-"
            lines.append(f"| {cls} | {count} | {share} |")
        lines += ["", "| input file | rows |", "|---|---|"]
        lines += [f"| `{path}` | {rows} |" for path, rows in p.inputs]
        if self.drift is not None:
            lines.append(self.drift.to_markdown())
        return "\n".join(lines)
