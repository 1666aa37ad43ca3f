"""Pure builders: each step's job spec, over the run ledger's datastore layout.

Nothing here touches storage or the network; both compute backends take the
specs as they are, so the tests can check a whole plan offline.
"""

from __future__ import annotations

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
    """The data-prep step of `run_id`: reads `input_path` (a file or a folder), writes the
    prepared dataframe under `prepared_dir(run_id)`.
    """
    return StepSpec(
        step="data_prep",
        run_id=run_id,
        code_dir=STEPS_DIR / "data_prep",
        script="run_data_prep.py",
        inputs=(StepInput("input_dataset_path", input_path, input_kind),),
        outputs=(StepOutput("output_dataframe_path", prepared_dir(run_id)),),
        # input_path: the step names files under it in its errors, not its local copy.
        params={"target_col": target_col, "input_path": input_path},
        display_name="data prep",
    )


def train_step(run_id: str, prepared_path: str, target_col: str, input_path: str) -> StepSpec:
    """The train step of `run_id`: reads the prepared dataframe, writes the model folder
    `model_dir(run_id)` (`input_path` is recorded in the model's metadata, not read).
    """
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
    checks the file's sha256 itself before loading it, wherever it runs. A
    folder of CSVs is mounted, not downloaded: the step reads only the files it
    scores (the new ones, its shard's), however many weeks the folder holds.
    """
    return StepSpec(
        step="score",
        run_id=run_id,
        code_dir=STEPS_DIR / "score",
        script="run_score.py",
        inputs=(
            StepInput("model", model_dir(model_run_id), "uri_folder"),
            StepInput(
                "input_data",
                input_path,
                input_kind,
                mode="ro_mount" if input_kind == "uri_folder" else "download",
            ),
        ),
        outputs=(StepOutput("predictions", predictions_dir(run_id)),),
        params={"run_id": run_id, "id_column": id_column, "chunk_size": chunk_size},
        display_name="score",
    )


# --- sharded scoring: a fan-out of score steps, then a merge ---------------------------

SHARD_PREFIX = "shard-"


def score_shard_count(
    input_kind: InputKind, csv_files: int, max_shards: int, min_files_per_shard: int
) -> int:
    """How many score steps to split the input into: 1 for a file or a small folder.

    A folder of `csv_files` CSVs gets up to `max_shards` shards of at least
    `min_files_per_shard` files each (settings `score_shards`,
    `score_min_files_per_shard`), the same on every compute backend.
    """
    if input_kind != "uri_folder" or max_shards <= 1:
        return 1
    return max(1, min(max_shards, csv_files // max(1, min_files_per_shard)))


def score_shard_steps(
    run_id: str,
    model_run_id: str,
    input_path: str,
    id_column: str,
    shards: int,
    chunk_size: int = 20_000,
) -> list[StepSpec]:
    """Shard k of `shards`: the plain score step over its share of the folder's CSVs.

    Every shard gets the whole folder as input and picks its files itself by
    position in the sorted list of relative paths (contiguous ranges), so a
    retried shard scores the same files, and the shards' predictions, appended
    in shard order, are the plain step's. Output:
    `prediction_parts/{run_id}/shard-{k}/` (predictions.csv + manifest.json);
    job names `{run_id}-score-{k}`.
    """
    plain = score_step(run_id, model_run_id, input_path, "uri_folder", id_column, chunk_size)
    return [
        StepSpec(
            step=f"score_{k}",
            run_id=run_id,
            code_dir=plain.code_dir,
            script=plain.script,
            inputs=plain.inputs,
            outputs=(
                StepOutput("predictions", f"{prediction_parts_dir(run_id)}/{SHARD_PREFIX}{k}"),
            ),
            params={**plain.params, "shard_index": k, "shard_count": shards},
            display_name=f"score shard {k + 1}/{shards}",
        )
        for k in range(shards)
    ]


def merge_step(run_id: str, shard_paths: list[str], expected_files: int) -> StepSpec:
    """Append the shards' predictions (in shard order) into `predictions/{run_id}/` + manifest.

    Each shard folder is its own input (`--shard-0 ... --shard-{n-1}`): a
    reused shard's folder belongs to an earlier run. `expected_files` is the
    number of CSVs the flow found: shards covering fewer fail the step.
    """
    return StepSpec(
        step="score_merge",
        run_id=run_id,
        code_dir=STEPS_DIR / "score",
        script="run_merge.py",
        inputs=tuple(
            StepInput(f"shard_{k}", path, "uri_folder") for k, path in enumerate(shard_paths)
        ),
        outputs=(StepOutput("predictions", predictions_dir(run_id)),),
        params={"run_id": run_id, "expected_files": expected_files},
        display_name="merge predictions",
    )
