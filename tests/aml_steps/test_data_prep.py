from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import run_data_prep
from data_prep import DataPrepError, data_prep, list_csv_files, read_csvs

REPO = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_happy_path(iris_df: pd.DataFrame) -> None:
    out = data_prep(iris_df)
    assert out.shape == (150, 5)
    assert list(out.columns) == [*iris_df.columns[:-1], "target"]
    assert all(out[c].dtype == np.float64 for c in out.columns[:-1])
    assert out.index.equals(pd.RangeIndex(150))


def test_bundled_sample_is_valid() -> None:
    out = data_prep(read_csvs([REPO / "data/sample/iris.csv"]))
    assert len(out) == 150
    assert sorted(out["target"].unique()) == ["setosa", "versicolor", "virginica"]
    score = pd.read_csv(REPO / "data/sample/iris_score.csv")
    assert list(score.columns) == ["id", *out.columns[:-1]]
    assert len(score) == 30


def test_missing_target_lists_columns(iris_df: pd.DataFrame) -> None:
    with pytest.raises(DataPrepError, match=r"'label' not found.*sepal_length"):
        data_prep(iris_df, target_col="label")


def test_duplicate_columns(iris_df: pd.DataFrame) -> None:
    df = iris_df.copy()
    df.columns = ["a", "a", "b", "c", "target"]
    with pytest.raises(DataPrepError, match=r"duplicate column names \['a'\]"):
        data_prep(df)


def test_zero_rows(iris_df: pd.DataFrame) -> None:
    with pytest.raises(DataPrepError, match="zero rows"):
        data_prep(iris_df.iloc[:0])


def test_no_feature_columns(iris_df: pd.DataFrame) -> None:
    with pytest.raises(DataPrepError, match="no feature columns"):
        data_prep(iris_df[["target"]])


def test_non_numeric_features_named_with_examples(iris_df: pd.DataFrame) -> None:
    df = iris_df.astype({"sepal_width": object})
    df.loc[3, "sepal_width"] = "n/a"
    with pytest.raises(DataPrepError, match=r"'sepal_width' \(e\.g\. \['n/a'\]\)"):
        data_prep(df)


def test_single_class(iris_df: pd.DataFrame) -> None:
    with pytest.raises(DataPrepError, match="single class 'setosa': need at least 2"):
        data_prep(iris_df.iloc[:50])


def test_single_class_after_dropping_missing_targets(iris_df: pd.DataFrame) -> None:
    df = iris_df.iloc[:60].copy()
    df.loc[50:, "target"] = None
    with pytest.raises(DataPrepError, match="single class"):
        data_prep(df)


def test_nan_inf_rows_dropped(iris_df: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    df = iris_df.copy()
    df.loc[0, "sepal_length"] = np.nan
    df.loc[1, "petal_width"] = np.inf
    df.loc[2, "petal_width"] = -np.inf
    df.loc[3, "target"] = None
    with caplog.at_level(logging.INFO):
        out = data_prep(df)
    assert len(out) == 146
    assert np.isfinite(out.iloc[:, :4].to_numpy()).all()
    assert "dropping 3 rows with missing or infinite features" in caplog.text
    assert "dropping 1 rows with a missing target" in caplog.text


def test_read_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.csv", "")
    with pytest.raises(DataPrepError, match=r"empty\.csv: file is empty"):
        read_csvs([path])


def test_read_header_only(tmp_path: Path) -> None:
    path = write(tmp_path / "header.csv", "a,b,target\n")
    with pytest.raises(DataPrepError, match=r"header\.csv: has a header but no data rows"):
        read_csvs([path])


def test_read_duplicated_headers(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.csv", "a,a,target\n1,2,x\n")
    with pytest.raises(DataPrepError, match=r"dup\.csv: duplicate column names \['a'\]"):
        read_csvs([path])


def test_read_parse_error_names_file(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.csv", "a,b,target\n1,2,x\n1,2,3,4,5\n")
    with pytest.raises(DataPrepError, match=r"bad\.csv: cannot parse CSV"):
        read_csvs([path])


def test_folder_mismatched_headers(tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.csv", "a,b,target\n1,2,x\n")
    write(tmp_path / "in" / "sub" / "b.csv", "a,c,target\n1,2,y\n")
    files = list_csv_files(tmp_path / "in")
    with pytest.raises(DataPrepError, match=r"b\.csv: header \['a', 'c', 'target'\] differs"):
        read_csvs(files)


def test_folder_recursive_sorted_and_stacked(tmp_path: Path) -> None:
    write(tmp_path / "in" / "z.csv", "a,target\n3,y\n")
    write(tmp_path / "in" / "sub" / "b.csv", "a,target\n2,x\n")
    write(tmp_path / "in" / "notes.txt", "ignored")
    files = list_csv_files(tmp_path / "in")
    assert [f.name for f in files] == ["b.csv", "z.csv"]
    assert read_csvs(files)["a"].tolist() == [2, 3]


def test_folder_without_csvs(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataPrepError, match=r"no CSV files found in folder .*nothing"):
        list_csv_files(tmp_path / "nothing")


def test_cli_happy_path(tmp_path: Path, iris_csv: Path) -> None:
    out = tmp_path / "out"
    rc = run_data_prep.main(
        ["--input-dataset-path", str(iris_csv.parent), "--output-dataframe-path", str(out)]
    )
    assert rc == 0
    assert [p.name for p in out.iterdir()] == ["prepared.parquet"]
    assert len(pd.read_parquet(out / "prepared.parquet")) == 150


def test_cli_bad_input_returns_2(
    tmp_path: Path, iris_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    rc = run_data_prep.main(
        [
            "--input-dataset-path",
            str(iris_csv),
            "--output-dataframe-path",
            str(out),
            "--target-col",
            "species",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: target column 'species' not found")
    assert not (out / "prepared.parquet").exists()
