"""Everyday scoring files that once scored wrongly or failed unclearly (issue 16).

Each test fails on the code before the fix: an empty file scored "successfully",
gzip and very long headers refused, a feature as id column or a ';' file
reported unclearly, a training file with an index column unscorable, the
missing-value rule differing from training's.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path

import pandas as pd
import pytest
import run_data_prep
import run_score
import run_train
from score import ScoreError, load_trained_model, score_files

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def run(model_dir: Path, input_path: Path, out: Path, *extra: str) -> int:
    return run_score.main(
        ["--model", str(model_dir), "--input-data", str(input_path), "--predictions", str(out),
         "--run-id", "score-run-1", *extra]
    )  # fmt: skip


def last_error(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


# --- 4. an empty file is not a scoring run ----------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\n", b"  \r\n"], ids=["0-bytes", "newline", "blank"])
def test_empty_file_is_refused(
    tmp_path: Path, trained_dir: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    csv = tmp_path / "week.csv"
    csv.write_bytes(content)
    out = tmp_path / "pred"
    assert run(trained_dir, csv, out) == 2
    error = last_error(capsys)
    assert error.startswith("error: week.csv: file is empty (no header, no rows): nothing to score")
    assert not (out / "manifest.json").exists()
    assert not (out / "predictions.csv").exists()


def test_folder_of_empty_files_is_refused(
    tmp_path: Path, trained_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.csv").write_bytes(b"")
    (tmp_path / "in" / "sub" / "b.csv").write_bytes(b"")
    out = tmp_path / "pred"
    assert run(trained_dir, tmp_path / "in", out) == 2
    assert last_error(capsys).startswith("error: a.csv: file is empty")
    assert not (out / "manifest.json").exists()


def test_header_only_file_still_scores_zero_rows(tmp_path: Path, trained_dir: Path) -> None:
    csv = tmp_path / "header.csv"
    csv.write_text("\n" + ",".join(FEATURES) + "\n")  # a blank line before the header
    (summary,) = score_files(load_trained_model(trained_dir), csv, tmp_path / "pred")
    assert summary.rows == 0


# --- 1. only an empty cell is missing, as in training ------------------------------------


def test_na_text_in_a_feature_is_named_as_not_a_number(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame
) -> None:
    df = iris_df.drop(columns="target").astype({"petal_width": object})
    df.loc[3, "petal_width"] = "NA"
    csv = tmp_path / "na.csv"
    df.to_csv(csv, index=False)
    with pytest.raises(ScoreError, match=r"na\.csv: column 'petal_width' has non-numeric .* \[4\]"):
        score_files(load_trained_model(trained_dir), csv, tmp_path / "pred")


def test_na_labels_round_trip_into_predictions(tmp_path: Path) -> None:
    rows = ["f1,f2,target"]
    for i in range(60):
        label = ["NA", "001", "None"][i % 3]
        rows.append(f"{i % 3 + (i % 7) / 10},{i % 5},{label}")
    csv = tmp_path / "raw" / "l.csv"
    csv.parent.mkdir()
    csv.write_text("\n".join(rows) + "\n")
    prepared, model = tmp_path / "prepared", tmp_path / "model"
    assert run_data_prep.main(
        ["--input-dataset-path", str(csv), "--output-dataframe-path", str(prepared)]
    ) == 0  # fmt: skip
    assert run_train.main(
        ["--training-dataframe", str(prepared), "--trained-model", str(model), "--run-id", "r"]
    ) == 0  # fmt: skip
    out = tmp_path / "pred"
    assert run(model, csv, out) == 0
    predictions = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    assert list(predictions.columns[2:]) == ["proba_001", "proba_NA", "proba_None"]
    assert set(predictions["predicted_class"]) == {"NA", "001", "None"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["001", "NA", "None"]


# --- 2. an index column: trained without it, scored without it ----------------------------


def test_a_file_with_an_index_column_trains_and_scores(
    tmp_path: Path, iris_df: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    csv = tmp_path / "raw" / "with_index.csv"
    csv.parent.mkdir()
    iris_df.to_csv(csv)  # the index as an unnamed first column
    prepared, model = tmp_path / "prepared", tmp_path / "model"
    assert run_data_prep.main(
        ["--input-dataset-path", str(csv), "--output-dataframe-path", str(prepared)]
    ) == 0  # fmt: skip
    assert run_train.main(
        ["--training-dataframe", str(prepared), "--trained-model", str(model), "--run-id", "r"]
    ) == 0  # fmt: skip
    meta = json.loads((model / "metadata.json").read_text())
    assert meta["feature_names"] == FEATURES
    with caplog.at_level(logging.WARNING):
        assert run(model, csv, tmp_path / "pred") == 0
    assert "ignoring unnamed column(s) at position [1]" in caplog.text
    assert len(pd.read_csv(tmp_path / "pred" / "predictions.csv")) == 150


# --- 12. gzip, long headers, id column, delimiters ----------------------------------------


@pytest.mark.parametrize("name", ["week.csv", "week.csv.gz"])
def test_gzip_compressed_file_is_scored(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame, name: str
) -> None:
    csv = tmp_path / name
    with gzip.open(csv, "wt", encoding="utf-8", newline="") as fh:
        iris_df.to_csv(fh, index=False)
    (summary,) = score_files(load_trained_model(trained_dir), csv, tmp_path / "pred")
    assert summary.rows == 150


def test_truncated_gzip_says_gzip(tmp_path: Path, trained_dir: Path) -> None:
    csv = tmp_path / "cut.csv"
    csv.write_bytes(gzip.compress((",".join(FEATURES) + "\n").encode() + b"1,2,3,4\n" * 999)[:30])
    with pytest.raises(ScoreError, match=r"cut\.csv: gzip-compressed but cannot be"):
        score_files(load_trained_model(trained_dir), csv, tmp_path / "pred")


@pytest.mark.slow
def test_header_over_256_kib_is_read(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame
) -> None:
    extra = pd.DataFrame(0, index=iris_df.index, columns=[f"note_{i:06d}" for i in range(30_000)])
    df = pd.concat([iris_df.drop(columns="target"), extra], axis=1)
    csv = tmp_path / "wide.csv"
    df.to_csv(csv, index=False)
    assert len(csv.read_text().split("\n", 1)[0]) > 256 << 10
    (summary,) = score_files(load_trained_model(trained_dir), csv, tmp_path / "pred", chunk_size=7)
    assert summary.rows == 150


def test_id_column_naming_a_feature_says_so(
    tmp_path: Path, trained_dir: Path, iris_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(trained_dir, iris_csv, tmp_path / "pred", "--id-column", "sepal_length") == 2
    error = last_error(capsys)
    assert "'sepal_length' is one of the model's features" in error
    assert "more than once" not in error


def test_semicolon_file_shows_the_columns_found(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "semi.csv"
    iris_df.to_csv(csv, index=False, sep=";")
    assert run(trained_dir, csv, tmp_path / "pred") == 2
    error = last_error(capsys)
    assert "semi.csv: missing feature columns" in error
    assert "the file's columns are ['sepal_length;sepal_width;" in error
    assert "delimited by ';'" in error


def test_duplicate_feature_in_header_is_named(
    tmp_path: Path, trained_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "dup.csv"
    csv.write_text(",".join([*FEATURES, "petal_width"]) + "\n1,2,3,4,5\n")
    assert run(trained_dir, csv, tmp_path / "pred") == 2
    assert "column 'petal_width' appears more than once in the header" in last_error(capsys)


def test_bom_file_is_scored(tmp_path: Path, trained_dir: Path) -> None:
    csv = tmp_path / "bom.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + (",".join(FEATURES) + "\r\n5,3,1.4,0.2\r\n").encode())
    (summary,) = score_files(load_trained_model(trained_dir), csv, tmp_path / "pred")
    assert summary.rows == 1


@pytest.mark.parametrize(
    ("head", "says"),
    [
        (b"PK\x03\x04\x14\x00", "a zip archive (an Excel .xlsx workbook?)"),
        (b"BZh91AY", "bzip2-compressed"),
        ("f1,target\n1,a\n".encode("utf-16"), "UTF-16 text: save it as UTF-8 CSV"),
    ],
    ids=["xlsx", "bzip2", "utf-16"],
)
def test_other_binary_formats_are_named(
    tmp_path: Path, trained_dir: Path, head: bytes, says: str
) -> None:
    path = tmp_path / "week.csv"
    path.write_bytes(head + b"\x00" * 64)
    with pytest.raises(ScoreError, match=r"week\.csv: the file is " + re.escape(says)):
        score_files(load_trained_model(trained_dir), path, tmp_path / "pred")


def test_cr_only_line_endings_are_scored(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame
) -> None:
    from score import read_header  # new with issue 16

    csv = tmp_path / "mac.csv"
    iris_df.to_csv(csv, index=False, lineterminator="\r")  # Excel for Mac's "CSV"
    header = read_header(csv, "mac.csv")
    assert header.names == [*FEATURES, "target"]
    assert header.size < 100  # the first record only, not the whole file
    (summary,) = score_files(load_trained_model(trained_dir), csv, tmp_path / "pred")
    assert summary.rows == 150


def test_quoted_newline_in_a_header_name(tmp_path: Path) -> None:
    from score import read_header  # new with issue 16

    csv = tmp_path / "q.csv"
    csv.write_bytes(b'\r\n\r\n"a\nb",c\r\n1,2\r\n')
    header = read_header(csv, "q.csv")
    assert header.names == ["a\nb", "c"]
    assert header.size == len(b'\r\n\r\n"a\nb",c\r')
