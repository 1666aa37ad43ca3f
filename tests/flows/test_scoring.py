"""Checking a scoring run's input and output on a real local datastore, without Prefect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.datastore import LocalDatastore
from flows.registry import ModelRef
from flows.scoring import (
    PredictionsVerificationError,
    ScoreInputError,
    check_score_input,
    verify_predictions,
)

CLASSES = ("setosa", "versicolor", "virginica")
HEADER = '"row_id","predicted_class","proba_setosa","proba_versicolor","proba_virginica"'
MODEL = ModelRef(
    run_id="train-1",
    model_path="trained_models/train-1/model.skops",
    model_sha256="ab" * 32,
    created_at="2026-11-23T06:00:00+00:00",
    accuracy=0.9,
    classes=CLASSES,
    feature_names=("a", "b"),
    uri="file:///x",
)


@pytest.fixture
def store(tmp_path: Path) -> LocalDatastore:
    return LocalDatastore(tmp_path / "store")


def _put(store: LocalDatastore, path: str, text: str) -> None:
    target = store.root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def _output(store: LocalDatastore, rows: list[str], inputs_rows: int, **manifest: object) -> None:
    _put(store, "predictions/score-1/predictions.csv", "\n".join([HEADER, *rows]) + "\n")
    content = {
        "run_id": "score-1",
        "model_run_id": MODEL.run_id,
        "model_sha256": MODEL.model_sha256,
        "inputs": [{"path": "week.csv", "rows": inputs_rows}],
        "output_rows": inputs_rows,
        "classes": list(CLASSES),
        "created_at": "2026-11-23T08:00:00+00:00",
        **manifest,
    }
    _put(store, "predictions/score-1/manifest.json", json.dumps(content))


ROWS = ['"a\nb","setosa",0.9,0.1,0', '"c","virginica",0,0.2,0.8', '"d","setosa",1,0,0']


def test_verified_output_counts_rows_and_classes(store: LocalDatastore) -> None:
    _output(store, ROWS, 3)
    ref = verify_predictions(store, "score-1", MODEL)
    assert ref.rows == 3  # the quoted newline is inside one row
    assert ref.class_counts == (("setosa", 2), ("versicolor", 0), ("virginica", 1))
    assert ref.inputs == (("week.csv", 3),)
    assert ref.pointer()["predictions_path"] == "predictions/score-1/predictions.csv"


def test_row_count_mismatch_is_refused(store: LocalDatastore) -> None:
    _output(store, ROWS[:2], 3)
    with pytest.raises(PredictionsVerificationError, match="has 2 rows, but the inputs had 3"):
        verify_predictions(store, "score-1", MODEL)


def test_output_of_another_model_is_refused(store: LocalDatastore) -> None:
    _output(store, ROWS, 3, model_sha256="cd" * 32)
    with pytest.raises(PredictionsVerificationError, match="model changed while the run"):
        verify_predictions(store, "score-1", MODEL)


def test_missing_manifest_or_csv(store: LocalDatastore) -> None:
    with pytest.raises(PredictionsVerificationError, match="did not finish"):
        verify_predictions(store, "score-1", MODEL)
    _output(store, ROWS, 3)
    (store.root / "predictions/score-1/predictions.csv").unlink()
    with pytest.raises(PredictionsVerificationError, match="missing although its manifest"):
        verify_predictions(store, "score-1", MODEL)


def test_input_folder_counts_only_csvs(store: LocalDatastore) -> None:
    _put(store, "raw/w/b.CSV", "x\n")
    _put(store, "raw/w/a.txt", "x\n")
    source, files = check_score_input(store, "raw/w")
    assert (source.name, source.kind, files) == ("input_data", "uri_folder", ["raw/w/b.CSV"])
    _put(store, "raw/none/a.txt", "x\n")
    with pytest.raises(ScoreInputError, match=r"no CSV files \(found 'raw/none/a.txt'\)"):
        check_score_input(store, "raw/none")
