"""The run ledger: what has run and what is current, kept in the datastore.

Backends only run jobs; the flows ask the ledger where a run's outputs go, which
earlier step can be reused, whether a step of this run already finished, and
which model or predictions are current. It is the one owner of:

- the layout: `prepared_dataframes/{run_id}/`, `trained_models/{run_id}/`,
  `predictions/{run_id}/`, `prediction_parts/{run_id}/` (the files inside are the
  artifact contract's, `somemodel.artifacts`);
- reuse records: `step_cache/{step}/{key}.json`, the outputs of the step that
  ran with that key (the key itself is computed by flows/reuse.py);
- completion markers: `_COMPLETE.json` in each output folder of a finished step.
  Every file whose name starts with `_` is a ledger record, not data, so input
  fingerprints skip it;
- `latest` pointers: `{root}/latest.json`, moved forward only, by conditional
  writes.

- the record of scored input files that exactly-once scoring needs:
  `scored_files/index.json` (its claim/mark logic is `flows/scored_files.py`,
  reached through `RunLedger.scored_files`), and each scoring run's file list,
  `score_batches/{run_id}/files.txt`.

Layers, each importing only the ones before it: `somemodel` (the artifact
contract) -> `flows.datastore` (the storage seam) -> `flows.ledger` -> the
compute backends, `flows.plan`, `flows.reuse`, `flows.registry`,
`flows.scoring` -> the tasks and flows.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from flows.datastore.base import Datastore, PreconditionFailedError, join
from flows.paths import InvalidPathError, check_run_id
from flows.scored_files import ScoredFiles
from somemodel.artifacts import (
    DRIFT_FILENAME,
    MANIFEST_FILENAME,
    METADATA_FILENAME,
    PREDICTIONS_FILENAME,
)

logger = logging.getLogger(__name__)

# A pointer's created_at further ahead of this machine's clock than this was
# written by a skewed clock: it would outrank every later run, so it is replaced.
FUTURE_TOLERANCE = timedelta(minutes=5)

# --- layout ---------------------------------------------------------------------------------

PREPARED_ROOT = "prepared_dataframes"
MODELS_ROOT = "trained_models"
PREDICTIONS_ROOT = "predictions"
PREDICTION_PARTS_ROOT = "prediction_parts"
SCORE_BATCHES_ROOT = "score_batches"
STEP_CACHE_ROOT = "step_cache"
LATEST = "latest.json"
COMPLETION_MARKER = "_COMPLETE.json"


def prepared_dir(run_id: str) -> str:
    """Where the data-prep step of `run_id` writes its prepared dataframe (a folder)."""
    return f"{PREPARED_ROOT}/{run_id}"


def model_dir(run_id: str) -> str:
    """The folder of the model that the train step of `run_id` writes (model, metadata, holdout)."""
    return f"{MODELS_ROOT}/{run_id}"


def model_metadata_path(run_id: str) -> str:
    """The model's metadata record: written last by the train step, so its absence means
    the step did not finish.
    """
    return f"{model_dir(run_id)}/{METADATA_FILENAME}"


def predictions_dir(run_id: str) -> str:
    """The folder of the predictions of scoring run `run_id` (the step's or the shards' merge)."""
    return f"{PREDICTIONS_ROOT}/{run_id}"


def predictions_path(run_id: str) -> str:
    """The predictions file of scoring run `run_id`."""
    return f"{predictions_dir(run_id)}/{PREDICTIONS_FILENAME}"


def predictions_manifest_path(run_id: str) -> str:
    """The predictions manifest of `run_id`: written last, it names the model and the inputs
    and row counts that verification checks.
    """
    return f"{predictions_dir(run_id)}/{MANIFEST_FILENAME}"


def drift_report_path(run_id: str) -> str:
    """The drift report of scoring run `run_id`, next to its predictions (written by the step)."""
    return f"{predictions_dir(run_id)}/{DRIFT_FILENAME}"


def prediction_parts_dir(run_id: str) -> str:
    """The parent folder of the shards' partial predictions of `run_id` (merged into
    `predictions_dir`; intermediate data that retention deletes).
    """
    return f"{PREDICTION_PARTS_ROOT}/{run_id}"


def score_batch_list_path(run_id: str) -> str:
    """The file list of scoring run `run_id`: the input folder's CSVs it scores, one a line."""
    return f"{SCORE_BATCHES_ROOT}/{run_id}/files.txt"


def latest_path(root: str) -> str:
    """The `latest.json` pointer under `root` (`trained_models` or `predictions`)."""
    return f"{root}/{LATEST}"


def reuse_record_path(step: str, key: str) -> str:
    """The reuse record of `step` for `key` (computed by flows/reuse.py): that step's outputs."""
    return f"{STEP_CACHE_ROOT}/{step}/{key}.json"


def is_ledger_file(path: str) -> bool:
    """True for a ledger record inside an output folder (`_COMPLETE.json`...), not data."""
    return PurePosixPath(path).name.startswith("_")


# --- records --------------------------------------------------------------------------------


class LedgerError(ValueError):
    """A ledger record in the datastore is malformed; the message names it and what to do."""


def _parse_object(text: str, source: str) -> dict[str, Any]:
    try:
        # The datastores decode with surrogateescape, so bytes that are not UTF-8 reach here.
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LedgerError(f"{source} is not UTF-8 text (byte {exc.start})") from exc
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LedgerError(f"{source} is not valid JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise LedgerError(f"{source} holds a JSON {type(record).__name__}, not an object")
    return record


@dataclass(frozen=True)
class ReuseRecord:
    """A finished step's outputs, recorded under its reuse key."""

    run_id: str
    job_name: str
    outputs: Mapping[str, str] = field(hash=False)
    url: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "run_id": self.run_id,
                "job_name": self.job_name,
                "outputs": dict(self.outputs),
                "url": self.url,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, source: str) -> ReuseRecord:
        record = _parse_object(text, source)
        outputs = record.get("outputs")
        if (
            not isinstance(record.get("run_id"), str)
            or not isinstance(record.get("job_name"), str)
            or not isinstance(outputs, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in outputs.items())
        ):
            raise LedgerError(
                f"{source} is not a reuse record (run_id, job_name, outputs {{name: path}}): "
                "delete it, and the step runs again"
            )
        return cls(record["run_id"], record["job_name"], dict(outputs), str(record.get("url", "")))


@dataclass(frozen=True)
class CompletionMarker:
    """Written into each output folder of a step after all its outputs were stored."""

    job_name: str
    environment: str
    duration_seconds: float

    def to_json(self) -> str:
        return json.dumps(
            {
                "job_name": self.job_name,
                "environment": self.environment,
                "duration_seconds": round(self.duration_seconds, 3),
            }
        )


@dataclass(frozen=True)
class LatestPointer:
    """What `{root}/latest.json` points at: a run, and when that run's output was made."""

    run_id: str
    created_at: str
    record: Mapping[str, Any] = field(hash=False, compare=False)

    @classmethod
    def from_json(cls, text: str, source: str) -> LatestPointer:
        record = _parse_object(text, source)
        run_id = record.get("run_id")
        try:
            check_run_id(run_id if isinstance(run_id, str) else "")
        except InvalidPathError as exc:
            raise LedgerError(f"{source} names no valid run id ({run_id!r}): {exc}") from exc
        created_at = record.get("created_at", "")
        return cls(str(run_id), created_at if isinstance(created_at, str) else "", record)


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (no offset: UTC); None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _excerpt(text: str, limit: int = 200) -> str:
    shown = text if len(text) <= limit else text[:limit] + "..."
    return repr(shown)


class Promotable(Protocol):
    """What a `latest.json` pointer can point at: a run, ordered by its creation time."""

    @property
    def run_id(self) -> str: ...

    @property
    def created_at(self) -> str: ...

    def pointer(self) -> dict[str, Any]: ...


# --- the ledger -------------------------------------------------------------------------------


class RunLedger:
    """The ledger's records in one datastore."""

    def __init__(self, datastore: Datastore) -> None:
        self.datastore = datastore

    # scored input files

    def scored_files(self, is_running: Callable[[str], bool], lease: timedelta) -> ScoredFiles:
        """The exactly-once record of scored input files (claims, then marks), in this store."""
        return ScoredFiles(self.datastore, is_running=is_running, lease=lease)

    # finished runs

    def finished_runs(self, root: str, record: str) -> list[str]:
        """The run ids under `root` whose folder holds `record` (the file a step writes
        last: `metadata.json`, `manifest.json`), sorted; `latest.json` and other files are
        not runs.
        """
        runs = []
        for path in self.datastore.list_files(root):
            parts = PurePosixPath(path).parts
            if len(parts) == 3 and parts[2] == record:
                runs.append(parts[1])
        return sorted(runs)

    # reuse records

    def reuse_record(self, step: str, key: str) -> ReuseRecord | None:
        """The outputs recorded for `key`, or None (also for a record that does not parse)."""
        path = reuse_record_path(step, key)
        current = self.datastore.read_versioned(path)
        if current is None:
            return None
        try:
            return ReuseRecord.from_json(
                current.text, f"{path!r} in the {self.datastore.describe()}"
            )
        except LedgerError as exc:
            # A broken record must not break the run: running the step again rewrites it.
            logger.warning("Ignoring a reuse record: %s", exc)
            return None

    def record_reuse(self, step: str, key: str, record: ReuseRecord) -> bool:
        """Record `record` under `key`; False when a concurrent run recorded it first."""
        path = reuse_record_path(step, key)
        current = self.datastore.read_versioned(path)
        try:
            self.datastore.write_conditional(
                path, record.to_json(), etag=current.etag if current else None
            )
        except PreconditionFailedError:
            return False
        return True

    # completion markers

    def is_complete(self, output_dirs: Iterable[str]) -> bool:
        """True when every one of a step's output folders holds its completion marker."""
        return all(self.datastore.exists(join(d, COMPLETION_MARKER)) for d in output_dirs)

    def mark_complete(self, output_dirs: Iterable[str], marker: CompletionMarker) -> None:
        """Write the marker into each output folder; call it after every output is stored."""
        with tempfile.TemporaryDirectory(prefix="ledger-") as tmp:
            local = Path(tmp) / COMPLETION_MARKER
            local.write_text(marker.to_json(), encoding="utf-8")
            for folder in output_dirs:
                self.datastore.upload_file(local, join(folder, COMPLETION_MARKER), overwrite=True)

    def clear_complete(self, output_dirs: Iterable[str]) -> None:
        """Remove the markers from a step's output folders, so that the step runs again."""
        for folder in output_dirs:
            self.datastore.delete_file(join(folder, COMPLETION_MARKER))

    # latest pointers

    def latest(self, root: str) -> LatestPointer | None:
        """What `{root}/latest.json` points at; None before the first promotion.

        Raises LedgerError when the pointer exists but is not one.
        """
        path = latest_path(root)
        current = self.datastore.read_versioned(path)
        if current is None:
            return None
        try:
            return LatestPointer.from_json(
                current.text, f"{path} in the {self.datastore.describe()}"
            )
        except LedgerError as exc:
            fix = "python flows/train.py" if root == MODELS_ROOT else "python flows/score.py"
            raise LedgerError(
                f"{exc}; the next promotion replaces it ({fix}), or delete the file"
            ) from exc

    @retry(
        retry=retry_if_exception_type(PreconditionFailedError),
        stop=stop_after_attempt(8),
        wait=wait_random_exponential(multiplier=0.05, max=2),
        reraise=True,
    )
    def promote(self, root: str, candidate: Promotable) -> bool:
        """Point `{root}/latest.json` at `candidate` unless it already points at a newer run.

        The write is conditional on the version read, so two runs finishing at
        once cannot clobber each other: the loser re-reads and decides again.
        """
        path = latest_path(root)
        current = self.datastore.read_versioned(path)
        if current is not None:
            try:
                pointed = LatestPointer.from_json(current.text, path)
            except LedgerError as exc:
                # A broken pointer must not block every later promotion: replace it.
                logger.warning("Replacing %s: %s; it held %s", path, exc, _excerpt(current.text))
            else:
                if _outranks(path, pointed, candidate):
                    logger.info(
                        "Not promoting %s: %s already points at the newer %s",
                        candidate.run_id,
                        path,
                        pointed.run_id,
                    )
                    return False
        self.datastore.write_conditional(
            path,
            json.dumps(candidate.pointer(), indent=2),
            etag=current.etag if current else None,
        )
        logger.info("Promoted %s: %s now points at it", candidate.run_id, path)
        return True


def _outranks(path: str, pointed: LatestPointer, candidate: Promotable) -> bool:
    """True when `pointed` names a run newer than `candidate`.

    Times compare as times (offsets honoured), not as text. A pointer whose
    created_at is not a timestamp, or lies more than FUTURE_TOLERANCE ahead of
    this machine's clock (a skewed clock would otherwise outrank every later
    run, and each would end "not promoted"), does not outrank: it is replaced,
    with a warning naming it.
    """
    raw = pointed.record.get("created_at")
    pointed_at = parse_time(raw)
    if pointed_at is None:
        logger.warning(
            "Replacing %s: its created_at %r (run %s) is not an ISO 8601 timestamp",
            path,
            raw,
            pointed.run_id,
        )
        return False
    now = datetime.now(UTC)
    if pointed_at > now + FUTURE_TOLERANCE:
        logger.warning(
            "Replacing %s: its created_at %s (run %s) is in the future (this machine's clock "
            "says %s; was it written by a machine with a skewed clock?)",
            path,
            raw,
            pointed.run_id,
            now.isoformat(timespec="seconds"),
        )
        return False
    candidate_at = parse_time(candidate.created_at)
    if candidate_at is None:
        return pointed.created_at > candidate.created_at
    return pointed_at > candidate_at
