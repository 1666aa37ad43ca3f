"""The training flow: wheel, environment, data prep, train, verify, promote.

Run it on this machine with the bundled sample (no Azure, no server):

    python flows/train.py [--input-path PATH] [--target-col NAME] [--run-id ID] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows.backends import Backends, open_backends
from flows.cli import add_verbose_flag, run_flow
from flows.compute.base import EnvironmentRef, StepResult
from flows.failures import fails_with_its_cause
from flows.paths import ColumnName, DatastorePath, RunId, make_run_id
from flows.plan import data_prep_step, train_step
from flows.promotion import check_promotion, final_state
from flows.results import report
from flows.samples import SAMPLES_DIR, seed
from flows.settings import Settings
from flows.summary import TrainPlan, TrainSummary
from flows.tasks import (
    build_environment,
    check_input,
    promote_model,
    register_model,
    submit_step,
    upload_wheel,
    verify_model_blob,
)
from flows.training_files import record_training_files
from flows.trends import record_history

SAMPLE_FILE = SAMPLES_DIR / "iris.csv"
SAMPLE_PATH = "samples/iris.csv"
# The deployment's input: the training data lands here (deployments.setup seeds it).
WEEKLY_INPUT = "raw/train"


def _run_name() -> str:
    given = flow_run.parameters.get("run_id")
    return given or make_run_id("train", flow_run.id, flow_run.scheduled_start_time)


@fails_with_its_cause
@flow(name="train-somemodel", flow_run_name=_run_name, log_prints=True)
def train(
    input_path: DatastorePath = WEEKLY_INPUT,
    target_col: ColumnName = "target",
    run_id: RunId | None = None,
    force_rerun: bool = False,
    dry_run: bool = False,
    force_promote: bool = False,
) -> TrainSummary | TrainPlan:
    """Train somemodel on the CSV file(s) at `input_path` and promote the verified model.

    A step whose code, environment, parameters and input data are unchanged
    since an earlier run reuses that run's output. The verified model is
    promoted only when the promotion gate passes (flows/gate.py); otherwise the
    run ends Completed, named `NotPromoted`, with the reason as its message.

    Args:
        input_path: A CSV file or a folder of CSVs in the datastore, e.g.
            raw/train or raw/2026-11-23.csv (no '..', no absolute path, no URL).
        target_col: The label column of the CSVs.
        run_id: Leave empty for a new run (named after the flow run); an earlier
            training run's id resumes that run, reusing its finished steps.
        force_rerun: Run every step again, even when an earlier run's output could be reused.
        dry_run: Write the steps as one Azure ML pipeline job under plans/{run_id}/
            and submit nothing.
        force_promote: Promote the verified model even if the promotion gate would
            keep the current one.
    """
    run_id = run_id or _run_name()
    backends = open_backends(Settings(), get_run_logger(), dry_run=dry_run)
    environment, steps = _train_steps(backends, run_id, input_path, target_col, force_rerun)
    if dry_run:
        return report(TrainPlan(run_id, input_path, environment.id, steps))
    model = verify_model_blob(backends.datastore, steps[-1].run_id)
    record_training_files(backends.datastore, model.run_id, input_path)
    gate = check_promotion(backends.datastore, backends.settings, model, target_col, force_promote)
    registration, promoted = None, False
    if gate.promote:
        registration = register_model(backends, model)
        promoted = promote_model(backends.datastore, model, registration)
    summary = TrainSummary(
        run_id, input_path, environment, steps, model, promoted, registration, gate
    )
    report(summary)
    record_history(backends.datastore, backends.settings, "training")
    return final_state(summary, gate)


def _train_steps(
    backends: Backends, run_id: str, input_path: str, target_col: str, force_rerun: bool
) -> tuple[EnvironmentRef, tuple[StepResult, ...]]:
    """The recipe up to the trained model: wheel, environment, data prep, train."""
    source = check_input(backends.datastore, input_path)
    wheel = upload_wheel(backends)
    environment = build_environment(backends, wheel)
    prep_spec = data_prep_step(run_id, source.path, source.kind, target_col)
    prepared = submit_step(backends, prep_spec, environment, force_rerun)
    prepared_path = prepared.outputs["output_dataframe_path"]
    train_spec = train_step(run_id, prepared_path, target_col, input_path)
    trained = submit_step(backends, train_spec, environment, force_rerun)
    return environment, (prepared, trained)


def seed_sample(settings: Settings) -> None:
    """Put the bundled iris CSV at `samples/iris.csv` in the datastore, once."""
    seed(settings, SAMPLE_FILE, SAMPLE_PATH)


def main(argv: list[str] | None = None) -> int:
    """The `python flows/train.py` command line: without `--input-path` it seeds and trains on
    the bundled sample; exit code 1 with one line on stderr on any error.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--input-path",
        help=f"CSV file or folder in the datastore (default: the bundled sample, {SAMPLE_PATH})",
    )
    parser.add_argument("--target-col", default="target", help="label column (default: target)")
    parser.add_argument("--run-id", help="resume this run id instead of starting a new one")
    parser.add_argument(
        "--force-rerun", action="store_true", help="run every step even if its output exists"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="write the Azure ML environment and job definitions to plans/RUN_ID/; submit nothing",
    )
    parser.add_argument(
        "--force-promote",
        action="store_true",
        help="promote the verified model even if the promotion gate would keep the current one",
    )
    add_verbose_flag(parser)
    args = parser.parse_args(argv)

    def start() -> Any:
        if args.input_path is None:
            seed_sample(Settings())
        return train(
            input_path=args.input_path or SAMPLE_PATH,
            target_col=args.target_col,
            run_id=args.run_id,
            force_rerun=args.force_rerun,
            dry_run=args.dry_run,
            force_promote=args.force_promote,
            return_state=True,
        )

    ok, summary = run_flow(start, args.verbose, "train")
    if not ok:
        return 1
    if not isinstance(summary, TrainSummary):
        print(f"run id:    {summary.run_id} (dry run: nothing uploaded or submitted)")
        print(f"plan:      {summary.folder}")
        for path in summary.files():
            print(f"           {path.name}")
        return 0
    accuracy = summary.model.accuracy
    print(f"run id:    {summary.run_id}")
    print(f"model:     {summary.model.uri}")
    print(f"accuracy:  {accuracy:.4f} (held-out)" if accuracy is not None else "accuracy: n/a")
    print(f"promoted:  {_promotion(summary)}")
    return 0


def _promotion(summary: TrainSummary) -> str:
    """`yes`, or `no` and why: the gate's reason, or that a newer model is latest."""
    return "yes" if summary.promoted else f"no ({summary.promotion_reason})"


if __name__ == "__main__":
    sys.exit(main())
