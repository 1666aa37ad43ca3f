"""Retention: delete intermediate data older than a configurable age (weekly deployment).

    python -m flows.cleanup [--older-than-days N] [--dry-run]

Intermediate data is what a run leaves behind on the way to its results:
`prepared_dataframes/{run_id}/` (the data-prep output), `prediction_parts/{run_id}/`
(parallel scoring parts) and `score_batches/{run_id}/` (a scoring run's file
list). A run's age is the date in its run id (`train-2026-11-23-1a2b3c4d`); a
folder whose run id carries no date is kept and reported.

Never deleted: models (`trained_models/`), predictions (`predictions/`), the
scored-files index, anything of the runs `latest.json` points at, and the
folders of flow runs that are still going (by the Prefect API). A deleted
data-prep output only means that a later run with the same input runs data
prep again instead of reusing it (flows/reuse.py checks outputs still exist).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.runtime import flow_run

from flows.backends import make_datastore
from flows.datastore.base import Datastore
from flows.failures import fails_with_its_cause
from flows.ledger import (
    PREDICTION_PARTS_ROOT,
    PREDICTIONS_ROOT,
    PREPARED_ROOT,
    SCORE_BATCHES_ROOT,
)
from flows.paths import RetentionDays, make_run_id
from flows.registry import latest_run_id
from flows.settings import Settings

INTERMEDIATE_ROOTS = (PREPARED_ROOT, PREDICTION_PARTS_ROOT, SCORE_BATCHES_ROOT)
_RUN_DATE = re.compile(r"-(\d{4}-\d{2}-\d{2})-")
_GOING = [StateType.RUNNING, StateType.PENDING, StateType.PAUSED, StateType.CANCELLING]


def run_date(run_id: str) -> date | None:
    """The date in a run id (`score-2026-11-23-1a2b3c4d` -> 2026-11-23), or None."""
    match = _RUN_DATE.search(f"{run_id}-")
    if match is None:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


@dataclass(frozen=True)
class Folder:
    """One run's folder under an intermediate root, and its files."""

    root: str
    run_id: str
    files: tuple[str, ...]

    @property
    def path(self) -> str:
        return f"{self.root}/{self.run_id}"


@dataclass(frozen=True)
class CleanupPlan:
    delete: tuple[Folder, ...]
    kept: tuple[tuple[str, str], ...]  # (folder, why)


def plan_cleanup(
    folders: list[Folder], today: date, older_than_days: float, protected: set[str]
) -> CleanupPlan:
    """Which folders are older than the age and not protected. Pure."""
    delete, kept = [], []
    for folder in folders:
        when = run_date(folder.run_id)
        if folder.run_id in protected:
            kept.append((folder.path, "in use (latest, or a run still going)"))
        elif when is None:
            kept.append((folder.path, "no date in its run id"))
        elif (today - when).days > older_than_days:
            delete.append(folder)
    return CleanupPlan(tuple(delete), tuple(kept))


@dataclass(frozen=True)
class CleanupReport:
    dry_run: bool
    older_than_days: float
    deleted: tuple[Folder, ...]
    kept: tuple[tuple[str, str], ...]

    @property
    def files(self) -> int:
        return sum(len(f.files) for f in self.deleted)

    def to_markdown(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        lines = [
            f"# Cleanup{' (dry run)' if self.dry_run else ''}",
            "",
            f"- intermediate data older than {self.older_than_days:g} days: {verb} "
            f"{len(self.deleted)} folder(s), {self.files} file(s)",
            "- never touched: trained_models/, predictions/, scored_files/",
            "",
        ]
        lines += [f"- {verb} `{f.path}/` ({len(f.files)} files)" for f in self.deleted]
        lines += [f"- kept `{path}/`: {why}" for path, why in self.kept]
        return "\n".join(lines)


def _folders(datastore: Datastore) -> list[Folder]:
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for root in INTERMEDIATE_ROOTS:
        for path in datastore.list_files(root):
            parts = path.split("/")
            if len(parts) >= 3:
                grouped[(root, parts[1])].append(path)
    return [Folder(root, run_id, tuple(files)) for (root, run_id), files in grouped.items()]


@task(cache_policy=NO_CACHE)
def find_protected_runs(datastore: Datastore) -> set[str]:
    """Run ids not to touch: what the latest pointers name, and every flow run still going."""
    protected = {r for r in (latest_run_id(datastore), latest_run_id(datastore, PREDICTIONS_ROOT))}
    with get_client(sync_client=True) as client:
        going = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_GOING))
            )
        )
    protected |= {run.name for run in going}
    return {run_id for run_id in protected if run_id}


@task(cache_policy=NO_CACHE)
def find_expired(datastore: Datastore, older_than_days: float, protected: set[str]) -> CleanupPlan:
    """The plan for the intermediate folders older than `older_than_days` (age from the run id's
    date, counted from today in UTC); deletes nothing.
    """
    today = datetime.now(UTC).date()
    return plan_cleanup(_folders(datastore), today, older_than_days, protected)


@task(cache_policy=NO_CACHE)
def delete_folders(datastore: Datastore, plan: CleanupPlan, dry_run: bool) -> None:
    """Delete the plan's folders file by file and log what was kept and why; `dry_run` only logs."""
    logger = get_run_logger()
    for folder in plan.delete:
        if dry_run:
            logger.info("Would delete %s/ (%d files)", folder.path, len(folder.files))
            continue
        for path in folder.files:
            datastore.delete_file(path)
        logger.info("Deleted %s/ (%d files)", folder.path, len(folder.files))
    for path, why in plan.kept:
        logger.info("Kept %s/: %s", path, why)


def _run_name() -> str:
    return make_run_id("cleanup", str(flow_run.id), flow_run.scheduled_start_time)


@fails_with_its_cause
@flow(name="cleanup-somemodel", flow_run_name=_run_name, log_prints=True)
def cleanup(
    older_than_days: RetentionDays | None = None,
    dry_run: bool = False,
) -> CleanupReport:
    """Delete intermediate data (prepared dataframes, prediction parts, score batches) older
    than a retention age; models, predictions, what `latest.json` names and what running
    flows use are never deleted.

    Args:
        older_than_days: Delete intermediate data older than this many days (0 or more);
            empty: SOMEMODEL_RETENTION_DAYS (28 unless set).
        dry_run: Only list what would be deleted; delete nothing.
    """
    settings = Settings()
    datastore = make_datastore(settings)
    age = settings.retention_days if older_than_days is None else older_than_days
    protected = find_protected_runs(datastore)
    plan = find_expired(datastore, age, protected)
    delete_folders(datastore, plan, dry_run)
    report = CleanupReport(dry_run, age, plan.delete, plan.kept)
    create_markdown_artifact(key="cleanup-summary", markdown=report.to_markdown())
    return report


def main(argv: list[str] | None = None) -> int:
    """The `python -m flows.cleanup` command line: run the flow, print its report, exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--older-than-days", type=float, default=None)
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    args = parser.parse_args(argv)
    report = cleanup(older_than_days=args.older_than_days, dry_run=args.dry_run)
    print(report.to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
