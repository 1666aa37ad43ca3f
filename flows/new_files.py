"""The score flow's "new files only" tasks: claim what no run scored, record what was scored.

A weekly scoring run over a folder scores only the CSVs that no earlier
successful run scored (by path and content fingerprint; see
flows/scored_files.py). The claimed files reach the score step as a file list
(`score_batches/{run_id}/files.txt`, see flows/ledger.py; the step's `--files` input), so the step
still reads one folder and its manifest lists exactly the files this run scored.

A single file given as the input, or `force_rerun`, is scored on purpose,
whatever was scored before; its record then names this run.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from flows.compute.base import StepInput, StepSpec
from flows.datastore.base import Datastore
from flows.ledger import RunLedger, score_batch_list_path
from flows.results import report
from flows.scored_files import Claim, InputFile, ScoredFiles
from flows.settings import Settings


@dataclass(frozen=True)
class ScoreBatch:
    """The files one scoring run scores, and whether they are a subset of its folder."""

    run_id: str
    input_path: str
    files: tuple[InputFile, ...]
    # Set when the step must score only part of the input folder.
    file_list: str | None
    on_purpose: bool
    skipped: int = 0

    @property
    def nothing_new(self) -> bool:
        return not self.files

    def relative(self, item: InputFile) -> str:
        return item.path[len(self.input_path.rstrip("/")) + 1 :]


@dataclass(frozen=True)
class NothingNew:
    """A scoring run that found no new file: nothing scored, predictions/latest.json unmoved."""

    run_id: str
    input_path: str
    already_scored: int

    artifact_key = "score-summary"
    result_key = "score-result"

    @property
    def description(self) -> str:
        return f"Run {self.run_id}"

    def to_result(self) -> dict[str, Any]:
        """The run's result as JSON: the same fields as a scoring run's, nothing scored."""
        return {
            "run_id": self.run_id,
            "input_path": self.input_path,
            "nothing_new": True,
            "already_scored": self.already_scored,
            "predictions_uri": None,
            "rows": 0,
            "files_scored": [],
            "promoted": False,
        }

    def to_markdown(self) -> str:
        return "\n".join(
            [
                f"# Scoring run `{self.run_id}`: nothing new",
                "",
                f"- input: `{self.input_path}`",
                f"- all {self.already_scored} CSV file(s) there were scored by earlier runs "
                "(or are being scored by a run still going): nothing to score",
                "- predictions/latest.json moved: no",
                "- to score them again on purpose: `force_rerun=true`, or give one file as "
                "`input_path`",
            ]
        )


def flow_run_is_running(flow_run_id: str) -> bool:
    """Whether the Prefect flow run is still going (unknown runs count as gone)."""
    with contextlib.suppress(ValueError):
        UUID(flow_run_id)
        with get_client(sync_client=True) as client:
            try:
                state = client.read_flow_run(UUID(flow_run_id)).state
            except ObjectNotFound:
                return False
        return state is not None and not state.is_final()
    return False


def scored_files(datastore: Datastore, settings: Settings) -> ScoredFiles:
    """The ledger's record of scored files, with Prefect telling which claiming runs still run."""
    lease = timedelta(seconds=settings.score_claim_lease_seconds)
    return RunLedger(datastore).scored_files(flow_run_is_running, lease)


@task(cache_policy=NO_CACHE)
def claim_new_files(
    datastore: Datastore,
    settings: Settings,
    run_id: str,
    source: StepInput,
    csv_files: list[str],
    force_rerun: bool = False,
) -> ScoreBatch:
    """The CSVs this run scores of `csv_files` (the input's, as `check_score_input` listed
    them): the folder's new ones, claimed; or all, on purpose.
    """
    logger = get_run_logger()
    files = [InputFile(path, datastore.fingerprint(path)) for path in csv_files]
    on_purpose = force_rerun or source.kind == "uri_file"
    if on_purpose:
        logger.info("Scoring all %d file(s) of %s on purpose", len(files), source.path)
        batch = ScoreBatch(run_id, source.path, tuple(files), None, on_purpose=True)
    else:
        claim: Claim = scored_files(datastore, settings).claim(
            run_id, files, flow_run_id=str(flow_run.id or "")
        )
        skipped = len(claim.already_scored) + len(claim.claimed_elsewhere)
        logger.info(
            "%s: %d new file(s) to score; %d scored before, %d being scored by another run",
            source.path,
            len(claim.files),
            len(claim.already_scored),
            len(claim.claimed_elsewhere),
        )
        batch = ScoreBatch(
            run_id, source.path, claim.files, None, on_purpose=False, skipped=skipped
        )
    if batch.nothing_new or source.kind == "uri_file":
        return batch
    # A folder is always read through a list, on purpose too: a file arriving while
    # the step runs is then left for the next run instead of scored but not recorded.
    listing = "".join(f"{batch.relative(item)}\n" for item in batch.files)
    path = score_batch_list_path(run_id)
    current = datastore.read_versioned(path)
    if current is None or current.text != listing:
        datastore.write_conditional(path, listing, etag=current.etag if current else None)
    return replace(batch, file_list=path)


def restrict_to_batch(spec: StepSpec, batch: ScoreBatch) -> StepSpec:
    """The score step reading only the batch's files of its folder (its `--files` input)."""
    if batch.file_list is None:
        return spec
    return replace(spec, inputs=(*spec.inputs, StepInput("files", batch.file_list, "uri_file")))


@task(cache_policy=NO_CACHE)
def mark_files_scored(
    datastore: Datastore, settings: Settings, batch: ScoreBatch, predictions_run_id: str
) -> None:
    """Record the batch's files as scored by this run (after its predictions verified)."""
    scored_files(datastore, settings).mark_scored(
        batch.run_id, batch.files, predictions_run_id, overwrite=batch.on_purpose
    )
    get_run_logger().info("Recorded %d file(s) as scored by %s", len(batch.files), batch.run_id)


@task(cache_policy=NO_CACHE)
def report_nothing_new(batch: ScoreBatch) -> NothingNew:
    """End a run that found no new file: log it and publish a "nothing new" summary artifact."""
    get_run_logger().info(
        "Nothing new under %s: %d file(s) already scored; predictions/latest.json stays",
        batch.input_path,
        batch.skipped,
    )
    return report(NothingNew(batch.run_id, batch.input_path, batch.skipped))
