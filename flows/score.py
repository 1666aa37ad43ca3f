"""The scoring flow: check the input, verify the model, score, verify the predictions, promote.

Run it on this machine after a training run (no Azure, no server); without
`--input-path` it scores the bundled sample:

    python flows/score.py [--input-path PATH] [--model latest|RUN_ID] [--id-column NAME]
"""

from __future__ import annotations

import argparse
import sys
from typing import Annotated, Protocol, runtime_checkable

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import AfterValidator

from flows.compute import make_compute
from flows.compute.base import Compute, EnvironmentRef, StepInput, StepResult
from flows.datastore import make_datastore
from flows.datastore.base import Datastore
from flows.new_files import (
    NothingNew,
    claim_new_files,
    mark_files_scored,
    report_nothing_new,
    restrict_to_batch,
)
from flows.paths import ColumnName, DatastorePath, RunId, make_run_id
from flows.plan import (
    PREDICTIONS_ROOT,
    ParallelRun,
    merge_step,
    parallel_score_step,
    score_step,
    scoring_mode,
)
from flows.registry import MODEL_LATEST, ModelRef, check_model_selector, promote
from flows.registry import resolve_model_run_id as _resolve_model_run_id
from flows.reuse import run_or_reuse
from flows.samples import SAMPLES_DIR, seed
from flows.scoring import PredictionsRef, ScoreSummary, check_score_input, verify_predictions
from flows.settings import Settings
from flows.tasks import build_environment, submit_step, upload_wheel, verify_model_blob

SAMPLE_FILE = SAMPLES_DIR / "iris_score.csv"
SAMPLE_PATH = "samples/iris_score.csv"

ModelSelector = Annotated[str, AfterValidator(check_model_selector)]


@runtime_checkable
class ParallelCompute(Protocol):
    """A backend that can run a step as a parallel job (AML)."""

    def run_parallel_step(self, run: ParallelRun, environment: EnvironmentRef) -> StepResult: ...


@task(cache_policy=NO_CACHE)
def check_csv_input(datastore: Datastore, input_path: str) -> tuple[StepInput, int]:
    source, files = check_score_input(datastore, input_path)
    get_run_logger().info("Input %s: %s with %d CSV file(s)", input_path, source.kind, len(files))
    return source, len(files)


@task(cache_policy=NO_CACHE)
def resolve_model(datastore: Datastore, model: str) -> str:
    run_id = _resolve_model_run_id(datastore, model)
    get_run_logger().info("Model %r is training run %s", model, run_id)
    return run_id


@task(cache_policy=NO_CACHE)
def submit_parallel_step(
    compute: Compute,
    datastore: Datastore,
    run: ParallelRun,
    environment: EnvironmentRef,
    force_rerun: bool = False,
) -> StepResult:
    """`submit_step` for a parallel run: reused the same way, submitted as an AML parallel job.

    A backend without parallel jobs (local) runs the same entry script as a
    command line over the files one after another.
    """

    def submit() -> StepResult:
        if isinstance(compute, ParallelCompute):
            return compute.run_parallel_step(run, environment)
        return compute.run_step(run.spec, environment)

    return run_or_reuse(datastore, run.spec, environment, submit, force_rerun=force_rerun)


def parallel_run(
    settings: Settings, run_id: str, model_run_id: str, source: StepInput, id_column: str
) -> ParallelRun:
    return parallel_score_step(
        run_id,
        model_run_id,
        source.path,
        id_column,
        instance_count=settings.aml_parallel_instance_count,
        mini_batch_size=settings.aml_parallel_mini_batch_size,
        max_concurrency_per_instance=settings.aml_parallel_processes_per_node,
    )


@task(cache_policy=NO_CACHE)
def verify_predictions_blob(datastore: Datastore, run_id: str, model: ModelRef) -> PredictionsRef:
    predictions = verify_predictions(datastore, run_id, model)
    logger = get_run_logger()
    logger.info("Verified %s: %d rows", predictions.predictions_path, predictions.rows)
    if not predictions.rows:
        logger.warning("The input has no data rows: 0 predictions written (not an error)")
    return predictions


@task(cache_policy=NO_CACHE)
def promote_predictions(datastore: Datastore, predictions: PredictionsRef) -> bool:
    return promote(datastore, predictions, root=PREDICTIONS_ROOT)


def _run_name() -> str:
    given = flow_run.parameters.get("run_id")
    return given or make_run_id("score", flow_run.id, flow_run.scheduled_start_time)


@flow(name="score-somemodel", flow_run_name=_run_name, log_prints=True)
def score(
    input_path: DatastorePath = SAMPLE_PATH,
    model: ModelSelector = MODEL_LATEST,
    id_column: ColumnName = "id",
    run_id: RunId | None = None,
    force_rerun: bool = False,
) -> ScoreSummary | NothingNew:
    """Score the new CSV file(s) at `input_path` with a verified model; move predictions/latest.

    A folder's CSVs that an earlier run scored (same path, same content) are
    skipped; with none new the run ends "nothing new" (flows/new_files.py). A
    single file, or `force_rerun`, is scored on purpose.

    `model` is `latest` (what trained_models/latest.json points at) or a training
    run id. `id_column` is copied to each prediction's `row_id` when the input
    has it. `run_id` defaults to a name derived from the flow run; pass an
    earlier run's id to resume it. Scoring the same input files with the same
    model and step code reuses the earlier run's predictions (see flows/reuse.py)
    unless `force_rerun` is set.
    """
    settings = Settings()
    run_id = run_id or _run_name()
    datastore = make_datastore(settings)
    compute = make_compute(settings, datastore, logger=get_run_logger())

    source, csv_files = check_csv_input(datastore, input_path)
    batch = claim_new_files(datastore, settings, run_id, source, force_rerun)
    if batch.nothing_new:
        return report_nothing_new(batch)
    model_run_id = resolve_model(datastore, model)
    verified = verify_model_blob(datastore, model_run_id)
    wheel = upload_wheel(datastore, settings)
    environment = build_environment(compute, settings, wheel)
    parallel = None
    mode = scoring_mode(compute.kind, source.kind, csv_files, settings.aml_parallel_min_files)
    if mode == "parallel" and batch.whole_folder:
        # One part per CSV on many nodes, then a small job appends them into predictions.csv.
        run = parallel_run(settings, run_id, verified.run_id, source, id_column)
        parallel = submit_parallel_step(compute, datastore, run, environment, force_rerun)
        spec = merge_step(run_id, parallel.outputs["parts"], csv_files)
    else:
        spec = score_step(run_id, verified.run_id, source.path, source.kind, id_column)
        spec = restrict_to_batch(spec, batch)
    scored = submit_step(compute, datastore, spec, environment, force_rerun)
    predictions = verify_predictions_blob(datastore, scored.run_id, verified)
    mark_files_scored(datastore, settings, batch, predictions.run_id)
    promoted = promote_predictions(datastore, predictions)

    summary = ScoreSummary(
        run_id, input_path, environment, scored, verified, predictions, promoted, parallel
    )
    create_markdown_artifact(
        key="score-summary", markdown=summary.to_markdown(), description=f"Run {run_id}"
    )
    return summary


def seed_sample(settings: Settings) -> None:
    """Put the bundled CSV to score at `samples/iris_score.csv` in the datastore, once."""
    seed(settings, SAMPLE_FILE, SAMPLE_PATH)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input-path",
        help=f"CSV file or folder of CSVs in the datastore (default: the sample, {SAMPLE_PATH})",
    )
    parser.add_argument(
        "--model",
        default=MODEL_LATEST,
        help="'latest' (default) or the run id of a training run",
    )
    parser.add_argument("--id-column", default="id", help="input column copied to row_id")
    parser.add_argument("--run-id", help="resume this run id instead of starting a new one")
    parser.add_argument(
        "--force-rerun",
        action="store_true",
        help="score again even if the same input was scored with the same model before",
    )
    args = parser.parse_args(argv)
    try:
        if args.input_path is None:
            seed_sample(Settings())
        summary = score(
            input_path=args.input_path or SAMPLE_PATH,
            model=args.model,
            id_column=args.id_column,
            run_id=args.run_id,
            force_rerun=args.force_rerun,
        )
    except Exception as exc:  # the CLI's job: one clear line, and a non-zero exit
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if isinstance(summary, NothingNew):
        print(f"run id:      {summary.run_id}")
        print(f"nothing new: all {summary.already_scored} CSV file(s) were scored before")
        return 0
    predictions = summary.predictions
    print(f"run id:      {summary.run_id}")
    print(f"model:       {summary.model.run_id} (sha256 {summary.model.model_sha256[:12]}...)")
    print(f"predictions: {predictions.uri}")
    if predictions.run_id != summary.run_id:
        print(f"             (reused from run {predictions.run_id}: same input and model)")
    print(f"rows:        {predictions.rows} ({summary.distribution()})")
    print(f"latest:      {'moved' if summary.promoted else 'not moved (a newer run is latest)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
