"""Which input files earlier scoring runs scored: each new file is scored exactly once.

One small JSON index on the datastore, `scored_files/index.json`, maps
`{path}@{fingerprint}` to a record: `claimed` by a run (before its step runs)
or `scored` by it (after its predictions verified). A file is identified by its
path and its content fingerprint, so a file replaced with new content is new.

Every change is a compare-and-swap on the index's ETag (`write_conditional`),
so two runs claiming at the same moment cannot both take a file: the loser
re-reads and sees the winner's claims. A claim is the claiming run's until:

- the same run id asks again (a retried or resumed run keeps its files);
- the claiming run is no longer running (`is_running(flow_run_id)` says so:
  it failed, crashed or was cancelled), or its claim is older than the lease.

Nothing here imports Prefect: the flow passes `is_running` (a Prefect API
look-up); the tests pass a function.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from flows.datastore.base import Datastore, PreconditionFailedError

SCORED_FILES_ROOT = "scored_files"
INDEX_PATH = f"{SCORED_FILES_ROOT}/index.json"
DEFAULT_LEASE = timedelta(hours=12)

CLAIMED = "claimed"
SCORED = "scored"

logger = logging.getLogger(__name__)


class ScoredFilesError(RuntimeError):
    """The scored-files index cannot be read or updated; the message says what to do."""


@dataclass(frozen=True)
class InputFile:
    """A file to score: its datastore path and its content fingerprint."""

    path: str
    fingerprint: str

    @property
    def key(self) -> str:
        return f"{self.path}@{self.fingerprint}"


@dataclass(frozen=True)
class Claim:
    """What one run got from `claim`: the files it must score, and those skipped."""

    run_id: str
    files: tuple[InputFile, ...]
    already_scored: tuple[InputFile, ...]
    claimed_elsewhere: tuple[InputFile, ...]

    @property
    def nothing_new(self) -> bool:
        return not self.files


def _now() -> datetime:
    return datetime.now(UTC)


class ScoredFiles:
    """The scored-files index on a datastore, updated only by compare-and-swap."""

    def __init__(
        self,
        datastore: Datastore,
        *,
        is_running: Callable[[str], bool] = lambda run_id: False,
        lease: timedelta = DEFAULT_LEASE,
        clock: Callable[[], datetime] = _now,
        path: str = INDEX_PATH,
    ) -> None:
        self.datastore = datastore
        self.is_running = is_running
        self.lease = lease
        self.clock = clock
        self.path = path

    # --- reading ------------------------------------------------------------------

    def _read(self) -> tuple[dict[str, dict[str, Any]], str | None]:
        current = self.datastore.read_versioned(self.path)
        if current is None:
            return {}, None
        try:
            current.text.encode("utf-8")  # read with surrogateescape: refuse non-UTF-8 here
            index = json.loads(current.text)
        except (json.JSONDecodeError, UnicodeEncodeError) as exc:
            raise ScoredFilesError(
                f"{self.path!r} in the {self.datastore.describe()} is not valid UTF-8 JSON "
                f"({exc}): restore it from a backup, or delete it to score every file again"
            ) from exc
        files = index.get("files") if isinstance(index, dict) else None
        if not isinstance(files, dict):
            raise ScoredFilesError(f"{self.path!r} has no 'files' object")
        return files, current.etag

    def records(self) -> dict[str, dict[str, Any]]:
        """Every record, keyed by `{path}@{fingerprint}`."""
        return self._read()[0]

    def scored_by(self, run_id: str) -> list[str]:
        """The paths that `run_id` scored (its records in state `scored`)."""
        return sorted(
            r["path"]
            for r in self.records().values()
            if r.get("state") == SCORED and r.get("run_id") == run_id
        )

    def _write(self, files: Mapping[str, dict[str, Any]], etag: str | None) -> None:
        text = json.dumps({"files": dict(sorted(files.items()))}, indent=1)
        self.datastore.write_conditional(self.path, text, etag=etag)

    # --- deciding -----------------------------------------------------------------

    def _takeable(self, record: dict[str, Any] | None, run_id: str) -> bool:
        """May `run_id` score the file with this record?"""
        if record is None or record.get("run_id") == run_id:
            return True
        if record.get("state") == SCORED:
            return False
        claimed_at = datetime.fromisoformat(str(record.get("claimed_at")))
        if self.clock() - claimed_at > self.lease:
            return True
        return not self.is_running(str(record.get("flow_run_id") or record.get("run_id")))

    # --- changing -----------------------------------------------------------------

    @retry(
        retry=retry_if_exception_type(PreconditionFailedError),
        stop=stop_after_attempt(10),
        wait=wait_random_exponential(multiplier=0.05, max=2),
        reraise=True,
    )
    def claim(self, run_id: str, candidates: Iterable[InputFile], flow_run_id: str = "") -> Claim:
        """Claim the candidates no other run scored or holds; return what this run must score.

        The files `run_id` already claimed or scored are its own again (a retry,
        or a restart under the same run id, scores the same files).
        """
        files, etag = self._read()
        mine, done, elsewhere = [], [], []
        for item in candidates:
            record = files.get(item.key)
            if self._takeable(record, run_id):
                mine.append(item)
            elif record is not None and record.get("state") == SCORED:
                done.append(item)
            else:
                elsewhere.append(item)
        now = self.clock().isoformat()
        changed = False
        for item in mine:
            record = files.get(item.key)
            if record is not None and record.get("run_id") == run_id:
                continue
            if record is not None:
                logger.warning(
                    "Taking over %s from run %s (no longer running, or its claim expired)",
                    item.path,
                    record.get("run_id"),
                )
            files[item.key] = {
                "path": item.path,
                "fingerprint": item.fingerprint,
                "state": CLAIMED,
                "run_id": run_id,
                "flow_run_id": flow_run_id,
                "claimed_at": now,
            }
            changed = True
        if changed:
            self._write(files, etag)
        return Claim(run_id, tuple(mine), tuple(done), tuple(elsewhere))

    @retry(
        retry=retry_if_exception_type(PreconditionFailedError),
        stop=stop_after_attempt(10),
        wait=wait_random_exponential(multiplier=0.05, max=2),
        reraise=True,
    )
    def mark_scored(
        self,
        run_id: str,
        scored: Iterable[InputFile],
        predictions_run_id: str = "",
        *,
        overwrite: bool = False,
    ) -> None:
        """Record that `run_id` scored these files (after its predictions verified).

        Refuses a file another run scored or holds in the meantime (its claim was
        taken over): this run's predictions of it must not count. `overwrite`
        (a file scored again on purpose) records this run's anyway.
        """
        files, etag = self._read()
        now = self.clock().isoformat()
        for item in scored:
            record = files.get(item.key)
            if record is not None and record.get("run_id") != run_id and not overwrite:
                raise ScoredFilesError(
                    f"{item.path} is now {record.get('state')} by run {record.get('run_id')!r}, "
                    f"not by {run_id!r}: this run lost its claim (it outlived the lease of "
                    f"{self.lease}); its predictions are not recorded as the file's"
                )
            files[item.key] = {
                **(record or {"claimed_at": now}),
                "path": item.path,
                "fingerprint": item.fingerprint,
                "state": SCORED,
                "run_id": run_id,
                "predictions_run_id": predictions_run_id or run_id,
                "scored_at": now,
            }
        self._write(files, etag)

    @retry(
        retry=retry_if_exception_type(PreconditionFailedError),
        stop=stop_after_attempt(10),
        wait=wait_random_exponential(multiplier=0.05, max=2),
        reraise=True,
    )
    def release(self, run_id: str) -> int:
        """Drop `run_id`'s unfinished claims (a run that gives up); return how many."""
        files, etag = self._read()
        mine = [
            key
            for key, r in files.items()
            if r.get("run_id") == run_id and r.get("state") == CLAIMED
        ]
        for key in mine:
            del files[key]
        if mine:
            self._write(files, etag)
        return len(mine)
