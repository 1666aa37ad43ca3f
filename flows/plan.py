"""Pure builders: each step's job spec, over the run ledger's datastore layout.

Nothing here touches storage or the network; both compute backends take the
specs as they are, so the tests can check a whole plan offline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from flows.compute.base import InputKind, StepInput, StepOutput, StepSpec
from flows.ledger import (  # noqa: F401  (the layout is the ledger's; flows import it from here too)
    LATEST,
    MODELS_ROOT,
    PREDICTION_PARTS_ROOT,
    PREDICTIONS_ROOT,
    PREPARED_ROOT,
    model_dir,
    prediction_parts_dir,
    predictions_dir,
    prepared_dir,
)
from flows.settings import REPO_ROOT

STEPS_DIR = REPO_ROOT / "aml_steps"


def data_prep_step(
    run_id: str, input_path: str, input_kind: InputKind, target_col: str
) -> StepSpec:
    return StepSpec(
        step="data_prep",
        run_id=run_id,
        code_dir=STEPS_DIR / "data_prep",
        script="run_data_prep.py",
        inputs=(StepInput("input_dataset_path", input_path, input_kind),),
        outputs=(StepOutput("output_dataframe_path", prepared_dir(run_id)),),
        params={"target_col": target_col},
        display_name="data prep",
    )


def train_step(run_id: str, prepared_path: str, target_col: str, input_path: str) -> StepSpec:
    return StepSpec(
        step="train",
        run_id=run_id,
        code_dir=STEPS_DIR / "train",
        script="run_train.py",
        inputs=(StepInput("training_dataframe", prepared_path, "uri_folder"),),
        outputs=(StepOutput("trained_model", model_dir(run_id)),),
        params={"target_col": target_col, "run_id": run_id, "input_path": input_path},
        display_name="train",
    )


def score_step(
    run_id: str,
    model_run_id: str,
    input_path: str,
    input_kind: InputKind,
    id_column: str,
    chunk_size: int = 20_000,
) -> StepSpec:
    """Score the CSV(s) at `input_path` with the model of training run `model_run_id`.

    The whole model folder goes in (model file + metadata.json), so the step
    checks the file's sha256 itself before loading it, wherever it runs.
    """
    return StepSpec(
        step="score",
        run_id=run_id,
        code_dir=STEPS_DIR / "score",
        script="run_score.py",
        inputs=(
            StepInput("model", model_dir(model_run_id), "uri_folder"),
            StepInput("input_data", input_path, input_kind),
        ),
        outputs=(StepOutput("predictions", predictions_dir(run_id)),),
        params={"run_id": run_id, "id_column": id_column, "chunk_size": chunk_size},
        display_name="score",
    )


# --- parallel scoring (AML only) ------------------------------------------------------

ScoringMode = Literal["command", "parallel"]

PARALLEL_ENTRY_SCRIPT = "parallel_score.py"
# Every input row must be scored: one file that still fails after its retries
# fails the job (the predictions would be incomplete, and verification would
# refuse them anyway, later and at a higher price).
PARALLEL_ERROR_THRESHOLD = 0
PARALLEL_MAX_RETRIES = 2


@dataclass(frozen=True)
class ParallelRun:
    """A step run as an AML parallel job: the step, and how AML splits its data input.

    `spec` is a normal `StepSpec` whose script (`parallel_score.py`) also runs
    as a command line over all the files one after another; that is how the
    local backend runs it. On AML, `entry_script`'s `init()`/`run(mini_batch)`
    are called by the parallel runtime over mini-batches of `data_input`.
    """

    spec: StepSpec
    data_input: str
    instance_count: int
    mini_batch_size: int
    max_concurrency_per_instance: int
    entry_script: str = PARALLEL_ENTRY_SCRIPT
    error_threshold: int = PARALLEL_ERROR_THRESHOLD
    max_retries: int = PARALLEL_MAX_RETRIES


def scoring_mode(
    compute_kind: str, input_kind: InputKind, csv_files: int, parallel_min_files: int
) -> ScoringMode:
    """`parallel` for a folder of at least `parallel_min_files` CSVs on AML, else `command`.

    0 turns parallel scoring off. The local backend always runs the plain step:
    on one machine, splitting the files only adds work.
    """
    if (
        compute_kind == "aml"
        and input_kind == "uri_folder"
        and parallel_min_files > 0
        and csv_files >= parallel_min_files
    ):
        return "parallel"
    return "command"


def parallel_score_step(
    run_id: str,
    model_run_id: str,
    input_path: str,
    id_column: str,
    *,
    instance_count: int,
    mini_batch_size: int,
    max_concurrency_per_instance: int,
    chunk_size: int = 20_000,
) -> ParallelRun:
    """Score each CSV under the folder `input_path` into its own part file.

    Output `prediction_parts/{run_id}/`: per input file, `part-<hash>.csv`
    (the plain step's predictions of that file, header included) and then
    `part-<hash>.json` (its relative path, row count and the model's
    identity). `merge_step` joins them into the one predictions.csv.
    """
    spec = StepSpec(
        step="score",
        run_id=run_id,
        code_dir=STEPS_DIR / "score",
        script=PARALLEL_ENTRY_SCRIPT,
        inputs=(
            StepInput("model", model_dir(model_run_id), "uri_folder"),
            StepInput("input_data", input_path, "uri_folder"),
        ),
        outputs=(StepOutput("parts", prediction_parts_dir(run_id)),),
        params={"id_column": id_column, "chunk_size": chunk_size},
        display_name="score (parallel)",
    )
    return ParallelRun(
        spec=spec,
        data_input="input_data",
        instance_count=instance_count,
        mini_batch_size=mini_batch_size,
        max_concurrency_per_instance=max_concurrency_per_instance,
    )


def merge_step(run_id: str, parts_path: str, expected_files: int) -> StepSpec:
    """Append the part files at `parts_path` into `predictions/{run_id}/` (+ manifest.json).

    `expected_files` is the number of CSVs the flow found in the input: a part
    missing for any of them fails the step instead of under-counting.
    """
    return StepSpec(
        step="score_merge",
        run_id=run_id,
        code_dir=STEPS_DIR / "score",
        script="run_merge.py",
        inputs=(StepInput("parts", parts_path, "uri_folder"),),
        outputs=(StepOutput("predictions", predictions_dir(run_id)),),
        params={"run_id": run_id, "expected_files": expected_files},
        display_name="merge predictions",
    )
