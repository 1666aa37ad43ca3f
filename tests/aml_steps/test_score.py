from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import run_score
from score import (
    PredictionsCsv,
    ScoredChunk,
    ScoreError,
    load_trained_model,
    score_batch,
    score_files,
)

from somemodel import load_model

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def run(model_dir: Path, input_path: Path, out: Path, *extra: str) -> int:
    return run_score.main(
        ["--model", str(model_dir), "--input-data", str(input_path), "--predictions", str(out),
         "--run-id", "score-run-1", *extra]
    )  # fmt: skip


def last_error(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_predictions_match_model(tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame) -> None:
    csv = tmp_path / "in" / "week.csv"
    csv.parent.mkdir()
    iris_df.to_csv(csv, index=False)
    out = tmp_path / "pred"
    assert run(trained_dir, csv.parent, out) == 0

    predictions = pd.read_csv(out / "predictions.csv")
    model = load_model(trained_dir / "model.skops")
    expected = model.predict(iris_df[FEATURES])
    assert predictions["predicted_class"].tolist() == list(expected)
    assert list(predictions.columns) == [
        "row_id", "predicted_class", "proba_setosa", "proba_versicolor", "proba_virginica",
    ]  # fmt: skip
    # 9 decimal places: within half a unit of the last one.
    np.testing.assert_allclose(
        predictions.iloc[:, 2:].to_numpy(),
        model.predict_proba(iris_df[FEATURES]),
        rtol=0,
        atol=5e-10 + 1e-15,
    )
    assert predictions["row_id"].tolist() == [f"week.csv:{i}" for i in range(150)]

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_id"] == "score-run-1"
    assert manifest["model_run_id"] == "train-run-1"
    assert manifest["inputs"] == [{"path": "week.csv", "rows": 150}]
    assert manifest["output_rows"] == 150
    assert manifest["classes"] == ["setosa", "versicolor", "virginica"]
    meta = json.loads((trained_dir / "metadata.json").read_text())
    assert manifest["model_sha256"] == meta["model_sha256"]
    assert sorted(p.name for p in out.iterdir()) == [
        "drift.json",
        "manifest.json",
        "predictions.csv",
    ]


def test_id_passthrough_kept_as_text(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame
) -> None:
    csv = tmp_path / "ids.csv"
    df = iris_df.drop(columns="target").iloc[:5]
    df.insert(0, "id", ["007", "008", "1e3", "abc", "010"])
    df.to_csv(csv, index=False)
    out = tmp_path / "pred"
    assert run(trained_dir, csv, out) == 0
    predictions = pd.read_csv(out / "predictions.csv", dtype={"row_id": str})
    assert predictions["row_id"].tolist() == ["007", "008", "1e3", "abc", "010"]


def test_custom_id_column_and_folder_relative_paths(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame
) -> None:
    root = tmp_path / "in"
    (root / "b").mkdir(parents=True)
    features = iris_df.drop(columns="target")
    features.iloc[:3].assign(key=["x", "y", "z"]).to_csv(root / "b" / "two.csv", index=False)
    features.iloc[3:5].to_csv(root / "a.csv", index=False)
    out = tmp_path / "pred"
    assert run(trained_dir, root, out, "--id-column", "key") == 0
    predictions = pd.read_csv(out / "predictions.csv")
    assert predictions["row_id"].tolist() == ["a.csv:0", "a.csv:1", "x", "y", "z"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"] == [{"path": "a.csv", "rows": 2}, {"path": "b/two.csv", "rows": 3}]


def test_a_file_list_scores_only_the_listed_files(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "in"
    (root / "w2").mkdir(parents=True)
    features = iris_df.drop(columns="target")
    features.iloc[:3].to_csv(root / "old.csv", index=False)
    features.iloc[3:5].to_csv(root / "w2" / "new.csv", index=False)
    listed = tmp_path / "files.txt"
    listed.write_text("w2/new.csv\n\n")
    out = tmp_path / "pred"
    assert run(trained_dir, root, out, "--files", str(listed)) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"] == [{"path": "w2/new.csv", "rows": 2}]

    listed.write_text("gone.csv\n")
    assert run(trained_dir, root, tmp_path / "pred2", "--files", str(listed)) == 2
    assert "names ['gone.csv']" in last_error(capsys)


def test_missing_feature_column(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "short.csv"
    iris_df.drop(columns=["petal_width", "sepal_width"]).to_csv(csv, index=False)
    out = tmp_path / "pred"
    assert run(trained_dir, csv, out) == 2
    assert "missing feature columns ['sepal_width', 'petal_width']" in last_error(capsys)
    assert not (out / "manifest.json").exists()
    assert not (out / "predictions.csv").exists()


def test_extra_columns_ignored(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    csv = tmp_path / "extra.csv"
    iris_df.assign(note="hello").iloc[:, ::-1].to_csv(csv, index=False)
    out = tmp_path / "pred"
    with caplog.at_level("INFO"):
        assert run(trained_dir, csv, out, "--chunk-size", "40") == 0
    assert caplog.text.count("ignoring columns ['note', 'target']") == 1
    assert len(pd.read_csv(out / "predictions.csv")) == 150


def test_non_numeric_values_report_rows(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "dirty.csv"
    df = iris_df.astype({"petal_length": object})
    df.loc[[20, 97], "petal_length"] = "oops"
    df.to_csv(csv, index=False)
    assert run(trained_dir, csv, tmp_path / "pred", "--chunk-size", "50") == 2
    error = last_error(capsys)
    assert error.startswith("error: dirty.csv: column 'petal_length' has non-numeric values")
    assert "[21]" in error  # 1-based data row of df index 20, in the first chunk


def _batch(df: pd.DataFrame) -> pa.RecordBatch:
    return pa.RecordBatch.from_pandas(df.reset_index(drop=True), preserve_index=False)


def test_non_numeric_rows_in_later_chunk(trained_dir: Path, iris_df: pd.DataFrame) -> None:
    trained = load_trained_model(trained_dir)
    chunk = iris_df.iloc[100:110].astype({"sepal_width": str}).reset_index(drop=True)
    chunk.loc[[2, 5], "sepal_width"] = "?"
    with pytest.raises(ScoreError, match=r"'sepal_width' .* rows \[103, 106\]"):
        score_batch(trained.model, _batch(chunk), FEATURES, "id", 100, "f.csv")


def test_missing_values_report_rows(trained_dir: Path, iris_df: pd.DataFrame) -> None:
    trained = load_trained_model(trained_dir)
    chunk = iris_df.iloc[:10].copy()
    chunk.loc[4, "petal_width"] = np.nan
    with pytest.raises(ScoreError, match=r"'petal_width' has missing or infinite .* \[5\]"):
        score_batch(trained.model, _batch(chunk), FEATURES, "id", 0, "f.csv")


def test_score_batch_matches_the_model(trained_dir: Path, iris_df: pd.DataFrame) -> None:
    trained = load_trained_model(trained_dir)
    chunk = iris_df.iloc[40:60].drop(columns="target").assign(id=[f"r{i}" for i in range(20)])
    scored = score_batch(trained.model, _batch(chunk), FEATURES, "id", 40, "f.csv")
    assert scored.row_ids.to_pylist() == [f"r{i}" for i in range(20)]
    np.testing.assert_array_equal(scored.proba, trained.model.predict_proba(chunk[FEATURES]))


class _BrokenModel:
    """Stands in for a custom model whose predict_proba returns what it should not."""

    classes_ = np.array(["a", "b"])

    def __init__(self, proba: Any) -> None:
        self.proba = proba

    def predict_proba(self, x: pd.DataFrame) -> Any:
        return self.proba


@pytest.mark.parametrize(
    ("proba", "message"),
    [
        ([[0.5, 0.5], [1.2, -0.2], [0.5, 0.5]], r"outside \[0, 1\] .* rows \[12\]"),
        ([[0.5, 0.5], [0.5, 0.5], [np.nan, 1.0]], r"outside \[0, 1\] \(or NaN\) .* rows \[13\]"),
        ([[0.5, 0.5], [0.5, 0.5]], r"shape \(2, 2\) for 3 rows and 2 classes"),
        ([0.5, 0.5, 0.5], r"shape \(3,\) for 3 rows"),
    ],
    ids=["out-of-range", "nan", "too-few-rows", "one-dimensional"],
)
def test_model_returning_bad_probabilities_is_refused(proba: Any, message: str) -> None:
    batch = pa.RecordBatch.from_pydict({"f": [1.0, 2.0, 3.0]})
    with pytest.raises(ScoreError, match=rf"^f\.csv: the model returned .*{message}"):
        score_batch(_BrokenModel(np.array(proba)), batch, ["f"], "id", 10, "f.csv")  # type: ignore[arg-type]


def test_rounding_error_just_outside_zero_and_one_is_clipped() -> None:
    batch = pa.RecordBatch.from_pydict({"f": [1.0]})
    model = _BrokenModel(np.array([[1 + 1e-12, -1e-12]]))
    scored = score_batch(model, batch, ["f"], "id", 0, "f.csv")  # type: ignore[arg-type]
    assert scored.proba.tolist() == [[1.0, 0.0]]


def _written(classes: list[Any], ids: list[str | None], proba: list[list[float]]) -> str:
    predictions = PredictionsCsv(classes)
    out = io.BytesIO()
    out.write(predictions.header)
    chunk = ScoredChunk(pa.array(ids, pa.string()).fill_null(""), np.array(proba, dtype=float))
    predictions.write_rows(out, chunk)
    return out.getvalue().decode("utf-8")


def test_written_rows_quote_every_text_and_parse_back() -> None:
    ids = ["plain", 'with "quotes"', "comma, inside", "new\nline", "ünï名", "", None, '"']
    proba = [[0.25, 0.75]] * len(ids)
    text = _written(['cl"ass', "x,y"], ids, proba)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["row_id", "predicted_class", 'proba_cl"ass', "proba_x,y"]
    assert [row[0] for row in rows[1:]] == [*ids[:6], "", '"']
    assert {row[1] for row in rows[1:]} == {"x,y"}
    assert text.startswith('"row_id","predicted_class","proba_cl""ass","proba_x,y"\n')
    assert text.endswith('"x,y",0.250000000,0.750000000\n')
    assert '"with ""quotes""","x,y",' in text


def test_probabilities_are_written_with_nine_decimals() -> None:
    proba = [[0.0, 1.0], [1e-9, 1 - 1e-9], [4e-10, 0.9999999996], [1 / 3, 2 / 3], [0.5, 0.5]]
    text = _written(["a", "b"], ["r"] * 5, proba)
    cells = [row[2:] for row in csv.reader(io.StringIO(text, newline=""))][1:]
    assert cells == [
        ["0.000000000", "1.000000000"],
        ["0.000000001", "0.999999999"],
        ["0.000000000", "1.000000000"],
        ["0.333333333", "0.666666667"],
        ["0.500000000", "0.500000000"],
    ]
    assert all(re.fullmatch(r"[01]\.\d{9}", cell) for row in cells for cell in row)


def test_class_labels_are_written_as_metadata_records_them() -> None:
    text = _written([np.int64(0), np.int64(1)], ["r"], [[0.2, 0.8]])
    assert text.splitlines() == [
        '"row_id","predicted_class","proba_0","proba_1"',
        '"r","1",0.200000000,0.800000000',
    ]


def test_an_empty_chunk_writes_nothing() -> None:
    assert _written(["a", "b"], [], np.empty((0, 2)).tolist()).count("\n") == 1


def test_header_only_csv_gives_zero_rows(tmp_path: Path, trained_dir: Path) -> None:
    csv = tmp_path / "empty.csv"
    csv.write_text(",".join(["id", *FEATURES]) + "\n")
    out = tmp_path / "pred"
    assert run(trained_dir, csv, out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["output_rows"] == 0
    assert manifest["inputs"] == [{"path": "empty.csv", "rows": 0}]
    assert pd.read_csv(out / "predictions.csv").empty


def test_folder_without_csvs(
    tmp_path: Path, trained_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "none").mkdir()
    assert run(trained_dir, tmp_path / "none", tmp_path / "pred") == 2
    assert "no CSV files found in folder" in last_error(capsys)


def test_tampered_model_refused_before_loading(
    tmp_path: Path,
    trained_dir: Path,
    iris_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import somemodel.persistence

    loaded: list[Path] = []
    monkeypatch.setattr(somemodel.persistence, "load_model", lambda path: loaded.append(path))
    with (trained_dir / "model.skops").open("ab") as fh:
        fh.write(b"\0")
    meta = json.loads((trained_dir / "metadata.json").read_text())
    assert run(trained_dir, iris_csv, tmp_path / "pred") == 2
    error = last_error(capsys)
    assert f"expected sha256 {meta['model_sha256']}" in error
    assert "actual " in error
    assert loaded == []


# 61 splits every read block at odd places in ~500 chunks (7 did the same in 4,300: 10x the time).
@pytest.mark.parametrize("chunk_size", [61, 7_001, 1_000_000])
def test_chunking_gives_identical_output(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame, chunk_size: int
) -> None:
    # 30,000 rows, ~750 KiB: three of Arrow's 256 KiB read blocks, so chunks both split
    # blocks and join them.
    big = pd.concat([iris_df.drop(columns="target")] * 200, ignore_index=True)
    big.insert(0, "id", [f"row-{i}" for i in range(len(big))])
    csv_path = tmp_path / "big.csv"
    big.to_csv(csv_path, index=False)
    assert csv_path.stat().st_size > 2 * (256 << 10)
    trained = load_trained_model(trained_dir)
    score_files(trained, csv_path, tmp_path / "one", chunk_size=len(big))
    score_files(trained, csv_path, tmp_path / "many", chunk_size=chunk_size)
    one = (tmp_path / "one" / "predictions.csv").read_bytes()
    assert one == (tmp_path / "many" / "predictions.csv").read_bytes()
    predictions = pd.read_csv(tmp_path / "many" / "predictions.csv")
    assert predictions["row_id"].tolist() == big["id"].tolist()
    expected = trained.model.predict(big[FEATURES])
    assert predictions["predicted_class"].tolist() == list(expected)


def test_crash_mid_scoring_leaves_no_outputs(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame
) -> None:
    root = tmp_path / "in"
    root.mkdir()
    iris_df.to_csv(root / "a_good.csv", index=False)
    iris_df.drop(columns="sepal_length").to_csv(root / "b_bad.csv", index=False)
    out = tmp_path / "pred"
    with pytest.raises(ScoreError, match=r"b_bad\.csv"):
        score_files(load_trained_model(trained_dir), root, out, chunk_size=10)
    assert list(out.iterdir()) == []


def test_bad_value_in_a_later_read_block_names_its_row(
    tmp_path: Path, trained_dir: Path, iris_df: pd.DataFrame
) -> None:
    # Beyond the first Arrow read block (64 KiB at chunk size 10), so the fast path
    # fails mid-file and pandas has to find and name the row.
    big = pd.concat([iris_df] * 40, ignore_index=True).drop(columns="target")
    big = big.astype({"sepal_width": object})
    big.loc[5000, "sepal_width"] = "n/a?"
    csv = tmp_path / "big.csv"
    big.to_csv(csv, index=False)
    with pytest.raises(ScoreError, match=r"big\.csv: column 'sepal_width' .* rows \[5001\]"):
        score_files(load_trained_model(trained_dir), csv, tmp_path / "pred", chunk_size=10)


def test_boolean_feature_column_is_refused(tmp_path: Path, trained_dir: Path) -> None:
    csv = tmp_path / "bools.csv"
    csv.write_text(",".join(FEATURES) + "\n1,2,3,True\n1,2,3,False\n")
    with pytest.raises(ScoreError, match=r"bools\.csv: cannot parse CSV.*'True'"):
        score_files(load_trained_model(trained_dir), csv, tmp_path / "pred")


def test_quoted_id_with_newline_stays_one_row(tmp_path: Path, trained_dir: Path) -> None:
    csv = tmp_path / "ids.csv"
    csv.write_text("id," + ",".join(FEATURES) + '\n"a\nb",5,3,1.4,0.2\nc,6,3,5,2\n')
    (summary,) = score_files(load_trained_model(trained_dir), csv, tmp_path / "pred")
    assert summary.rows == 2
    predictions = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    assert predictions["row_id"].tolist() == ["a\nb", "c"]
