"""Pure builders: the run's datastore layout and each step's job spec.

Nothing here touches storage or the network; both compute backends take the
specs as they are, so the tests can check a whole plan offline.
"""

from __future__ import annotations

from flows.compute.base import InputKind, StepInput, StepOutput, StepSpec
from flows.settings import REPO_ROOT

STEPS_DIR = REPO_ROOT / "aml_steps"

PREPARED_ROOT = "prepared_dataframes"
MODELS_ROOT = "trained_models"
PREDICTIONS_ROOT = "predictions"
LATEST = "latest.json"


def prepared_dir(run_id: str) -> str:
    return f"{PREPARED_ROOT}/{run_id}"


def model_dir(run_id: str) -> str:
    return f"{MODELS_ROOT}/{run_id}"


def predictions_dir(run_id: str) -> str:
    return f"{PREDICTIONS_ROOT}/{run_id}"


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
    chunk_size: int = 100_000,
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
