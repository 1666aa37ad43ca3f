"""The score step's drift report: drift.json next to the predictions, from one streaming pass."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import run_score
from train import train

from somemodel.artifacts import METADATA_FILENAME, PROFILE_FILENAME, write_model_artifact
from tests.drift_data import drift_table

THRESHOLD = 0.25


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on 4,000 rows of the drift table, with its training profile."""
    folder = tmp_path_factory.mktemp("model")
    result = train(drift_table(4000, seed=11))
    assert result.profile is not None
    write_model_artifact(
        result.model,
        folder,
        run_id="train-drift-1",
        input_path="raw/train.csv",
        target_col="target",
        metrics=result.metrics,
        n_train=result.n_train,
        n_test=result.n_test,
        created_at=datetime(2026, 11, 23, tzinfo=UTC),
        profile=result.profile,
    )
    return folder


def _score(model: Path, table: pd.DataFrame, tmp_path: Path) -> dict:
    csv = tmp_path / "week.csv"
    table.drop(columns="target").to_csv(csv, index=False)
    out = tmp_path / "pred"
    argv = ["--model", str(model), "--input-data", str(csv), "--predictions", str(out),
            "--run-id", "score-drift-1", "--chunk-size", "1000"]  # fmt: skip
    assert run_score.main(argv) == 0
    return json.loads((out / "drift.json").read_text())


def _drifted(report: dict) -> list[str]:
    return [f["name"] for f in report["features"] if f["psi"] > max(THRESHOLD, f["noise_floor"])]


def test_training_profile_is_part_of_the_model_folder(model_dir: Path) -> None:
    metadata = json.loads((model_dir / METADATA_FILENAME).read_text())
    assert metadata["profile_file"] == PROFILE_FILENAME
    profile = json.loads((model_dir / PROFILE_FILENAME).read_text())
    assert profile["rows"] == 4000
    assert [f["name"] for f in profile["features"]] == ["x1", "x2", "x3", "x4"]
    assert all(len(f["counts"]) == 10 and sum(f["counts"]) == 4000 for f in profile["features"])
    assert {c["class"] for c in profile["classes"]} == {"high", "low", "mid"}


def test_data_from_the_training_distribution_reports_no_drift(
    model_dir: Path, tmp_path: Path
) -> None:
    report = _score(model_dir, drift_table(6000, seed=12), tmp_path)
    assert report["status"] == "compared"
    assert report["rows"] == 6000
    assert _drifted(report) == []
    assert report["classes"]["psi"] < THRESHOLD
    assert all(f["out_of_range_share"] < 0.01 for f in report["features"])


def test_shifted_data_reports_drift_on_exactly_the_scaled_feature_and_the_classes(
    model_dir: Path, tmp_path: Path
) -> None:
    report = _score(model_dir, drift_table(6000, seed=13, shifted=True), tmp_path)
    assert _drifted(report) == ["x3"]
    classes = report["classes"]
    assert classes["psi"] > max(THRESHOLD, classes["noise_floor"])
    assert classes["predicted_shares"]["mid"] < 0.05
    assert classes["training_shares"]["mid"] == pytest.approx(0.5, abs=0.05)


def test_a_model_without_a_training_profile_scores_and_says_so(
    model_dir: Path, tmp_path: Path
) -> None:
    """A model trained before profiles joined the contract: its metadata lacks the key."""
    old = tmp_path / "old-model"
    old.mkdir()
    for name in ("model.skops",):
        (old / name).write_bytes((model_dir / name).read_bytes())
    metadata = json.loads((model_dir / METADATA_FILENAME).read_text())
    del metadata["profile_file"]
    (old / METADATA_FILENAME).write_text(json.dumps(metadata))

    report = _score(old, drift_table(500, seed=14), tmp_path)
    assert report["status"] == "no training profile"
    assert report["features"] == []
    assert report["classes"] is None
    assert report["rows"] == report["scored_profile"]["rows"] == 500
