"""The scoring flow: check the input, verify the model, score, verify the predictions, promote.

Run it on this machine after a training run (no Azure, no server); without
`--input-path` it scores the bundled sample:

    python flows/score.py [--input-path PATH] [--model latest|RUN_ID] [--id-column NAME]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.backends import Backends, open_backends
from flows.cli import add_verbose_flag, run_flow
from flows.compute.base import EnvironmentRef, StepInput, StepResult
from flows.datastore.base import Datastore
from flows.failures import fails_with_its_cause
from flows.new_files import (
    NothingNew,
    ScoreBatch,
    claim_new_files,
    mark_files_scored,
    report_nothing_new,
    restrict_to_batch,
)
from flows.paths import MODEL_LATEST, ColumnName, DatastorePath, ModelSelector, RunId, make_run_id
from flows.plan import (
    PREDICTIONS_ROOT,
    merge_step,
    score_shard_count,
    score_shard_steps,
    score_step,
)
from flows.registry import ModelRef, promote
from flows.registry import resolve_model_run_id as _resolve_model_run_id
from flows.results import report
from flows.samples import SAMPLES_DIR, seed
from flows.scoring import PredictionsRef, ScoreSummary, check_score_input, verify_predictions
from flows.settings import Settings
from flows.tasks import (
    build_environment,
    submit_step,
    submit_steps,
    upload_wheel,
    verify_model_blob,
)
from flows.trends import alert_on_drift, check_drift, record_history

SAMPLE_FILE = SAMPLES_DIR / "iris_score.csv"
SAMPLE_PATH = "samples/iris_score.csv"
# The deployment's input: the week's CSVs land here (deployments.setup seeds it).
WEEKLY_INPUT = "raw/score"


@task(cache_policy=NO_CACHE)
def check_csv_input(datastore: Datastore, input_path: str) -> tuple[StepInput, list[str]]:
    """The step input for `input_path` and its CSV files; a folder without a CSV is
    refused before any model is loaded.
    """
    source, files = check_score_input(datastore, input_path)
    get_run_logger().info("Input %s: %s with %d CSV file(s)", input_path, source.kind, len(files))
    return source, files


@task(cache_policy=NO_CACHE)
def resolve_model(datastore: Datastore, model: str) -> str:
    """The training run id that `model` (`latest` or a run id) names; NoModelError if none."""
    run_id = _resolve_model_run_id(datastore, model)
    get_run_logger().info("Model %r is training run %s", model, run_id)
    return run_id


def score_in_shards(
    backends: Backends,
    run_id: str,
    model: ModelRef,
    batch: ScoreBatch,
    source: StepInput,
    id_column: str,
    environment: EnvironmentRef,
    force_rerun: bool,
) -> tuple[StepResult, tuple[StepResult, ...]]:
    """The score step, or shard steps and their merge; returns the step that wrote predictions/.

    Each step reads the batch's files of the input (its file list). How many
    shards follows from the batch and the settings alone, the same way on
    every compute: a file or a few files are one plain step.
    """
    settings = backends.settings
    files = len(batch.files)
    shards = score_shard_count(
        source.kind, files, settings.score_shards, settings.score_min_files_per_shard
    )
    if shards == 1:
        spec = score_step(run_id, model.run_id, source.path, source.kind, id_column)
        return submit_step(backends, restrict_to_batch(spec, batch), environment, force_rerun), ()
    get_run_logger().info("Scoring %d CSV files in %d shards", files, shards)
    specs = score_shard_steps(run_id, model.run_id, source.path, id_column, shards)
    specs = [restrict_to_batch(spec, batch) for spec in specs]
    scored = submit_steps(backends, specs, environment, force_rerun)
    merge = merge_step(run_id, [r.outputs["predictions"] for r in scored], files)
    return submit_step(backends, merge, environment, force_rerun), tuple(scored)


@task(cache_policy=NO_CACHE)
def verify_predictions_blob(datastore: Datastore, run_id: str, model: ModelRef) -> PredictionsRef:
    """The scoring run's predictions, checked against its manifest and `model`; zero rows
    is only a warning.
    """
    predictions = verify_predictions(datastore, run_id, model)
    logger = get_run_logger()
    logger.info("Verified %s: %d rows", predictions.predictions_path, predictions.rows)
    if not predictions.rows:
        logger.warning("The input has no data rows: 0 predictions written (not an error)")
    return predictions


@task(cache_policy=NO_CACHE)
def promote_predictions(datastore: Datastore, predictions: PredictionsRef) -> bool:
    """Move `predictions/latest.json` to these predictions; False if it names a newer run."""
    return promote(datastore, predictions, root=PREDICTIONS_ROOT)


def _run_name() -> str:
    given = flow_run.parameters.get("run_id")
    return given or make_run_id("score", flow_run.id, flow_run.scheduled_start_time)


@fails_with_its_cause
@flow(name="score-somemodel", flow_run_name=_run_name, log_prints=True)
def score(
    input_path: DatastorePath = WEEKLY_INPUT,
    model: ModelSelector = MODEL_LATEST,
    id_column: ColumnName = "id",
    run_id: RunId | None = None,
    force_rerun: bool = False,
) -> ScoreSummary | NothingNew:
    """Score the new CSV file(s) at `input_path` with a verified model; move predictions/latest.

    A folder's CSVs that an earlier run scored (same path, same content) are
    skipped; with none new the run ends "nothing new" (flows/new_files.py). A
    single file, or `force_rerun`, is scored on purpose. Scoring the same files
    with the same model and step code reuses the earlier run's predictions
    (flows/reuse.py).

    The step's drift report is judged against SOMEMODEL_DRIFT_PSI_THRESHOLD: a
    run whose data drifted is tagged `drift` and ends Completed as `Drifted`
    (announced like a failure), its predictions written and promoted all the
    same (flows/trends.py).

    Args:
        input_path: A CSV file or a folder of CSVs in the datastore, e.g.
            raw/score/2026-11-23.csv; a folder's files that earlier runs scored are skipped.
        model: Which model scores: latest (what trained_models/latest.json points at)
            or a training run id such as train-2026-11-23-1a2b3c4d.
        id_column: The input column copied to each prediction's row_id when the input has it.
        run_id: Leave empty for a new run (named after the flow run); an earlier
            scoring run's id resumes that run.
        force_rerun: Score every CSV again, even files that earlier runs scored.
    """
    run_id = run_id or _run_name()
    backends = open_backends(Settings(), get_run_logger())
    datastore = backends.datastore

    source, csv_files = check_csv_input(datastore, input_path)
    batch = claim_new_files(datastore, backends.settings, run_id, source, csv_files, force_rerun)
    if batch.nothing_new:
        return report_nothing_new(batch)
    model_run_id = resolve_model(datastore, model)
    verified = verify_model_blob(datastore, model_run_id)
    wheel = upload_wheel(backends)
    environment = build_environment(backends, wheel)
    scored, shards = score_in_shards(
        backends, run_id, verified, batch, source, id_column, environment, force_rerun
    )
    predictions = verify_predictions_blob(datastore, scored.run_id, verified)
    mark_files_scored(datastore, backends.settings, batch, predictions.run_id)
    promoted = promote_predictions(datastore, predictions)
    drift = check_drift(datastore, backends.settings, predictions)

    summary = ScoreSummary(
        run_id, input_path, environment, scored, verified, predictions, promoted, shards, drift
    )
    report(summary)
    record_history(datastore, backends.settings, "drift", drift)
    return alert_on_drift(summary, drift)


def seed_sample(settings: Settings) -> None:
    """Put the bundled CSV to score at `samples/iris_score.csv` in the datastore, once."""
    seed(settings, SAMPLE_FILE, SAMPLE_PATH)


def main(argv: list[str] | None = None) -> int:
    """The `python flows/score.py` command line: without `--input-path` it seeds and scores the
    bundled sample; exit code 1 with one line on stderr on any error.
    """
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
    add_verbose_flag(parser)
    args = parser.parse_args(argv)

    def start() -> Any:
        if args.input_path is None:
            seed_sample(Settings())
        return score(
            input_path=args.input_path or SAMPLE_PATH,
            model=args.model,
            id_column=args.id_column,
            run_id=args.run_id,
            force_rerun=args.force_rerun,
            return_state=True,
        )

    ok, summary = run_flow(start, args.verbose, "score")
    if not ok:
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
    if summary.drift is not None:
        print(f"drift:       {summary.drift.summary_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
