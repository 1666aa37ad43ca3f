"""Put each step folder on sys.path, the way AML runs it (the step folder is the cwd)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_iris

STEPS_DIR = Path(__file__).resolve().parents[2] / "aml_steps"
for _step in ("data_prep", "train", "score"):
    _path = str(STEPS_DIR / _step)
    if _path not in sys.path:
        sys.path.insert(0, _path)

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture
def iris_df() -> pd.DataFrame:
    data = load_iris(as_frame=True)
    df = data.data.copy()
    df.columns = FEATURES
    df["target"] = data.target.map(dict(enumerate(data.target_names))).astype(object)
    return df


@pytest.fixture
def iris_csv(tmp_path: Path, iris_df: pd.DataFrame) -> Path:
    path = tmp_path / "raw" / "iris.csv"
    path.parent.mkdir()
    iris_df.to_csv(path, index=False)
    return path


@pytest.fixture
def trained_dir(tmp_path: Path, iris_csv: Path) -> Path:
    """A real train-step output folder, produced by running data_prep then train."""
    import run_data_prep
    import run_train

    prepared = tmp_path / "prepared"
    model_dir = tmp_path / "model"
    assert (
        run_data_prep.main(
            ["--input-dataset-path", str(iris_csv), "--output-dataframe-path", str(prepared)]
        )
        == 0
    )
    assert (
        run_train.main(
            [
                "--training-dataframe",
                str(prepared),
                "--trained-model",
                str(model_dir),
                "--run-id",
                "train-run-1",
                "--input-path",
                "raw/iris.csv",
            ]
        )
        == 0
    )
    return model_dir
