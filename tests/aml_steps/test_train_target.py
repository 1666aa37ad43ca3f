"""The train step's target checks: a continuous target, or a label per row, is refused in
one short line (issue 16, item 5), not a list of every value or a scikit-learn traceback.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import run_data_prep
import run_train
from train import TrainError, train


def regression_frame(n: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(n, 3)), columns=["f1", "f2", "f3"])
    df["target"] = (df["f1"] * 3.7 + rng.normal(size=n)).round(4)
    return df


@pytest.mark.parametrize("as_text", [False, True], ids=["floats", "text-from-csv"])
def test_continuous_target_is_refused_in_one_short_line(as_text: bool) -> None:
    df = regression_frame()
    if as_text:
        df["target"] = df["target"].astype(str)
    with pytest.raises(TrainError) as info:
        train(df)
    message = str(info.value)
    assert message.startswith("the target 'target' looks continuous (")
    assert "distinct values in 1,000 rows): somemodel is a classifier" in message
    assert len(message) < 250


def test_continuous_target_through_the_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "prices.csv"
    regression_frame().to_csv(csv, index=False)
    prepared = tmp_path / "prepared"
    assert run_data_prep.main(
        ["--input-dataset-path", str(csv), "--output-dataframe-path", str(prepared)]
    ) == 0  # fmt: skip
    capsys.readouterr()
    rc = run_train.main(
        ["--training-dataframe", str(prepared), "--trained-model", str(tmp_path / "m"),
         "--run-id", "r"]
    )  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: the target 'target' looks continuous")
    assert len(err) < 1000


def test_a_label_per_row_names_a_few_classes_only() -> None:
    df = regression_frame(400)
    df["target"] = [f"customer-{i}" for i in range(400)]
    with pytest.raises(TrainError) as info:
        train(df)
    message = str(info.value)
    assert message.startswith("400 of the 400 classes (e.g. ['customer-0',")
    assert len(message) < 300


@pytest.mark.parametrize(
    "labels",
    [
        [str(i % 3) for i in range(300)],  # integer codes
        [f"{i % 25 / 2:.1f}" for i in range(1000)],  # 25 half-step ratings in 1,000 rows
        [f"class-{i % 30}" for i in range(300)],  # many named classes
    ],
    ids=["codes", "ratings", "names"],
)
def test_class_labels_are_not_taken_for_continuous(labels: list[str]) -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(len(labels), 2)), columns=["f1", "f2"])
    df["target"] = labels
    result = train(df, test_size=0.5)
    assert len(result.model.classes_) == len(set(labels))
