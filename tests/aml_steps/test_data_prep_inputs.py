"""Everyday files that once trained a wrong model or failed unclearly (issue 16).

Each test fails on the code before the fix: labels rewritten or dropped, a row
index trained on, most rows silently dropped, scratch paths in messages, gzip
and BOM files refused, quadratic header checks.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import run_data_prep
import run_train
from data_prep import DataPrepError, data_prep, list_csv_files, read_csvs

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def prepare(paths: list[Path], **kwargs: object) -> pd.DataFrame:
    return data_prep(read_csvs(paths), **kwargs)  # type: ignore[arg-type]


def train_cli(tmp_path: Path, csv: Path) -> dict[str, object]:
    """data prep then train through their CLIs; the model's metadata.json."""
    prepared, model = tmp_path / "prepared", tmp_path / "model"
    assert run_data_prep.main(
        ["--input-dataset-path", str(csv), "--output-dataframe-path", str(prepared)]
    ) == 0  # fmt: skip
    assert run_train.main(
        ["--training-dataframe", str(prepared), "--trained-model", str(model), "--run-id", "r"]
    ) == 0  # fmt: skip
    metadata: dict[str, object] = json.loads((model / "metadata.json").read_text())
    return metadata


# --- 1. labels round-trip as written; only an empty cell is missing ----------------------


def labelled(labels: list[str], rows_per_label: int = 10) -> str:
    rng = np.random.default_rng(0)
    lines = ["f1,f2,target"]
    for i, label in enumerate(labels):
        for _ in range(rows_per_label):
            lines.append(f"{i + rng.normal(0, 0.1):.3f},{rng.normal():.3f},{label}")
    return "\n".join(lines) + "\n"


LABELS = ["001", "002", "NA", "NULL", "None", "nan", "N/A", "True", "1.0"]


def test_labels_keep_their_text_and_na_tokens_are_classes(tmp_path: Path) -> None:
    csv = write(tmp_path / "labels.csv", labelled(LABELS))
    out = prepare([csv])
    assert len(out) == 10 * len(LABELS)
    assert sorted(out["target"].unique()) == sorted(LABELS)


def test_labels_reach_the_model_as_written(tmp_path: Path) -> None:
    metadata = train_cli(tmp_path, write(tmp_path / "raw" / "l.csv", labelled(LABELS)))
    assert sorted(metadata["classes"]) == sorted(LABELS)  # type: ignore[type-var]


def test_only_an_empty_label_is_missing(tmp_path: Path) -> None:
    text = labelled(["a", "b"]) + "1,2,\n3,4,NA\n"
    out = prepare([write(tmp_path / "l.csv", text)])
    assert len(out) == 21
    assert out["target"].tolist()[-1] == "NA"


def test_na_text_in_a_feature_is_not_a_number(tmp_path: Path) -> None:
    body = labelled(["a", "b"]).split("\n", 1)[1]
    csv = write(tmp_path / "f.csv", "f1,f2,target\nNA,1,a\n" + body)
    with pytest.raises(DataPrepError, match=r"'f1' \(e\.g\. \['NA'\]\).*only an empty cell"):
        prepare([csv])


def test_empty_and_nan_features_are_missing(tmp_path: Path) -> None:
    body = labelled(["a", "b"]).split("\n", 1)[1]
    csv = write(tmp_path / "f.csv", "f1,f2,target\n,1,a\nnan,1,b\n1,inf,a\n" + body)
    out = prepare([csv])
    assert len(out) == 20
    assert out["f1"].dtype == np.float64


# --- 2. an unnamed (index) column is never a feature --------------------------------------


def test_pandas_index_column_is_dropped_with_a_warning(
    tmp_path: Path, iris_df: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    csv = tmp_path / "raw" / "with_index.csv"
    csv.parent.mkdir()
    iris_df.to_csv(csv)  # index=True: a first column with an empty name
    with caplog.at_level(logging.WARNING):
        metadata = train_cli(tmp_path, csv)
    assert metadata["feature_names"] == FEATURES
    assert "unnamed column(s) at position [1]" in caplog.text
    assert "index" in caplog.text


def test_unnamed_header_written_back_is_dropped_too(tmp_path: Path, iris_df: pd.DataFrame) -> None:
    csv = tmp_path / "twice.csv"
    iris_df.to_csv(csv)
    pd.read_csv(csv).to_csv(csv)  # read back ("Unnamed: 0") and exported with an index again
    assert csv.read_text().startswith(",Unnamed: 0,sepal_length,")
    out = prepare([csv])
    assert list(out.columns) == [*FEATURES, "target"]


@pytest.mark.parametrize("index_label", ["index", "row"])
def test_a_named_index_column_is_refused(
    tmp_path: Path, iris_df: pd.DataFrame, index_label: str
) -> None:
    csv = tmp_path / "named.csv"
    iris_df.to_csv(csv, index_label=index_label)
    with pytest.raises(DataPrepError, match=rf"'{index_label}' holds the row numbers \(0, 1, 2"):
        prepare([csv])


def test_an_index_restarting_in_each_file_is_refused(tmp_path: Path, iris_df: pd.DataFrame) -> None:
    for name, part in (("a.csv", iris_df.iloc[:75]), ("b.csv", iris_df.iloc[75:])):
        part.reset_index(drop=True).reset_index().to_csv(tmp_path / name, index=False)
    with pytest.raises(DataPrepError, match="'index' holds the row numbers"):
        prepare([tmp_path / "a.csv", tmp_path / "b.csv"])


def test_a_counting_feature_in_a_small_file_is_kept(tmp_path: Path) -> None:
    rows = "".join(f"{i},{'ab'[i % 2]}\n" for i in range(20))
    assert len(prepare([write(tmp_path / "small.csv", "n,target\n" + rows)])) == 20


# --- 3. no silent mass drop of rows -----------------------------------------------------


def sparse_rows(n: int, missing: int) -> str:
    lines = ["f1,f2,target"]
    for i in range(n):
        f2 = "" if i < missing else str(i % 7)
        lines.append(f"{i % 5},{f2},{'ab'[i % 2]}")
    return "\n".join(lines) + "\n"


def test_dropping_most_rows_fails_naming_counts_and_column(tmp_path: Path) -> None:
    csv = write(tmp_path / "sparse.csv", sparse_rows(1000, 990))
    with pytest.raises(DataPrepError) as info:
        prepare([csv])
    message = str(info.value)
    assert "990 of 1,000 rows (99%)" in message
    assert "'f2' in 990 rows" in message
    assert "--max-dropped-share" in message
    assert "\n" not in message


def test_drop_share_is_configurable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write(tmp_path / "sparse.csv", sparse_rows(1000, 600))
    assert len(prepare([csv], max_dropped_share=0.7)) == 400
    out = tmp_path / "out"
    argv = ["--input-dataset-path", str(csv), "--output-dataframe-path", str(out)]
    assert run_data_prep.main(argv) == 2
    assert "600 of 1,000 rows (60%)" in capsys.readouterr().err
    assert run_data_prep.main([*argv, "--max-dropped-share", "0.6"]) == 0


def test_a_few_dropped_rows_are_fine(tmp_path: Path) -> None:
    assert len(prepare([write(tmp_path / "s.csv", sparse_rows(1000, 100))])) == 900


# --- 11. errors name the input as the user gave it -------------------------------------


def test_errors_name_the_datastore_path_not_the_local_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scratch = tmp_path / ".cache" / "run-data-prep-x1y2" / "inputs" / "input_dataset_path"
    write(scratch / "a.csv", "f1,target\n1,a\n2,b\n")
    write(scratch / "sub" / "week1.csv", "f1,target\n1,a\n1,2,3\n")
    argv = ["--input-dataset-path", str(scratch), "--output-dataframe-path", str(tmp_path / "o")]
    assert run_data_prep.main([*argv, "--input-path", "raw/train"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: raw/train/sub/week1.csv: cannot parse CSV")
    assert ".cache" not in error
    assert run_data_prep.main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: sub/week1.csv: ")


def test_a_single_file_input_is_named_as_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write(tmp_path / ".cache" / "inputs" / "week1.csv", "")
    argv = ["--input-dataset-path", str(csv), "--output-dataframe-path", str(tmp_path / "o")]
    assert run_data_prep.main([*argv, "--input-path", "raw/train/week1.csv"]) == 2
    assert "error: raw/train/week1.csv: file is empty" in capsys.readouterr().err


# --- 12. gzip, byte-order marks, delimiters ---------------------------------------------


@pytest.mark.parametrize("name", ["week.csv", "week.csv.gz"])
def test_gzip_compressed_csv_is_read(tmp_path: Path, iris_df: pd.DataFrame, name: str) -> None:
    path = tmp_path / "in" / name
    path.parent.mkdir()
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
        iris_df.to_csv(fh, index=False)
    assert list_csv_files(tmp_path / "in") == [path]
    assert len(prepare([path])) == 150


def test_truncated_gzip_says_gzip(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv"
    path.write_bytes(gzip.compress(b"f1,target\n" + b"1,a\n2,b\n" * 1000)[:40])
    with pytest.raises(DataPrepError, match=r"cut\.csv: gzip-compressed but cannot be"):
        prepare([path])


def test_files_with_and_without_a_bom_stack(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_bytes(b"\xef\xbb\xbff1,target\r\n1,a\r\n2,b\r\n")
    (tmp_path / "in" / "b.csv").write_bytes(b"f1,target\n3,a\n4,b\n")
    out = prepare(list_csv_files(tmp_path / "in"))
    assert out["f1"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_semicolon_file_says_what_it_found(tmp_path: Path) -> None:
    csv = write(tmp_path / "semi.csv", "f1;f2;target\n1;2;a\n")
    with pytest.raises(DataPrepError, match=r"columns are \['f1;f2;target'\].*delimited by ';'"):
        prepare([csv])


# --- 13. wide files: header checks are linear ---------------------------------------------


@pytest.mark.slow
def test_wide_file_is_prepared_in_linear_time(tmp_path: Path) -> None:
    # 30,000 columns: 51 s before (two quadratic duplicate checks, pandas per column), ~6 s now.
    n = 30_000
    names = [f"c{i}" for i in range(n)]
    rows = [",".join(str(i % 3) for i in range(n)) + f",{label}" for label in "abab"]
    csv = write(tmp_path / "wide.csv", ",".join([*names, "target"]) + "\n" + "\n".join(rows))
    started = time.perf_counter()
    out = prepare([csv])
    elapsed = time.perf_counter() - started
    assert out.shape == (4, n + 1)
    assert elapsed < 20, f"{elapsed:.1f} s for {n} columns"


def test_wide_messages_stay_short(tmp_path: Path) -> None:
    names = [f"c{i}" for i in range(5000)]
    a = write(tmp_path / "in" / "a.csv", ",".join([*names, "target"]) + "\n" + "1," * 5000 + "a\n")
    b = write(tmp_path / "in" / "b.csv", ",".join([*names[::-1], "target"]) + "\n")
    with pytest.raises(DataPrepError) as info:
        read_csvs([a, b], names=["a.csv", "b.csv"])
    assert "same columns in another order" in str(info.value)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    ("head", "says"),
    [
        (b"PK\x03\x04\x14\x00", "a zip archive (an Excel .xlsx workbook?)"),
        (b"BZh91AY", "bzip2-compressed"),
        ("f1,target\n1,a\n".encode("utf-16"), "UTF-16 text: save it as UTF-8 CSV"),
    ],
    ids=["xlsx", "bzip2", "utf-16"],
)
def test_other_binary_formats_are_named(tmp_path: Path, head: bytes, says: str) -> None:
    path = tmp_path / "week.csv"
    path.write_bytes(head + b"\x00" * 64)
    with pytest.raises(DataPrepError, match=r"week\.csv: the file is " + re.escape(says)):
        prepare([path])


def test_cr_only_line_endings_are_read(tmp_path: Path, iris_df: pd.DataFrame) -> None:
    csv = tmp_path / "mac.csv"
    iris_df.to_csv(csv, index=False, lineterminator="\r")  # Excel for Mac's "CSV"
    assert len(prepare([csv])) == 150


def test_a_folder_without_csvs_is_named_as_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scratch = tmp_path / ".cache" / "inputs" / "input_dataset_path"
    write(scratch / "notes.txt", "not data")
    argv = ["--input-dataset-path", str(scratch), "--output-dataframe-path", str(tmp_path / "o")]
    assert run_data_prep.main([*argv, "--input-path", "raw/train"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: no CSV files found in folder raw/train")
    assert "['notes.txt']" in error
