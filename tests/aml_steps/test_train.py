from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import run_train
from train import TrainError, build_metadata, log_to_mlflow, train

import somemodel.persistence
from somemodel import load_model

METADATA_KEYS = {
    "run_id", "input_path", "target_col", "model_file", "model_sha256", "metrics",
    "feature_names", "classes", "somemodel_version", "sklearn_version", "python_version",
    "n_train", "n_test", "created_at", "profile_file",
}  # fmt: skip


def prepared(tmp_path: Path, df: pd.DataFrame) -> Path:
    folder = tmp_path / "prepared"
    folder.mkdir()
    df.to_parquet(folder / "prepared.parquet", index=False)
    return folder


def test_train_metrics(iris_df: pd.DataFrame) -> None:
    result = train(iris_df)
    assert result.n_train == 120
    assert result.n_test == 30
    assert result.metrics["accuracy"] > 0.8
    assert set(result.metrics["per_class"]) == {"setosa", "versicolor", "virginica"}
    assert all(m["support"] == 10 for m in result.metrics["per_class"].values())


def test_build_metadata_is_json_friendly(iris_df: pd.DataFrame) -> None:
    result = train(iris_df.assign(target=iris_df["target"].astype("category").cat.codes))
    created = datetime(2026, 1, 2, tzinfo=UTC)
    meta = build_metadata(
        result,
        run_id="r",
        input_path="p",
        target_col="target",
        model_sha256="0" * 64,
        created_at=created,
    ).to_dict()
    assert set(meta) == METADATA_KEYS
    assert meta["classes"] == [0, 1, 2]
    assert json.loads(json.dumps(meta)) == meta
    assert meta["created_at"] == "2026-01-02T00:00:00+00:00"


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (slice(0, 50), "single class 'setosa'"),
        ([*range(50), 50], r"classes \['versicolor'\] have fewer than 2 rows"),
        ([0, 1, 50, 51, 100, 101], "too few rows"),
    ],
)
def test_train_rejects_unsplittable(iris_df: pd.DataFrame, rows: object, match: str) -> None:
    with pytest.raises(TrainError, match=match):
        train(iris_df.iloc[rows])  # type: ignore[call-overload]


def test_train_rejects_bad_test_size(iris_df: pd.DataFrame) -> None:
    with pytest.raises(TrainError, match="test_size"):
        train(iris_df, test_size=1.5)


def test_main_end_to_end(tmp_path: Path, iris_df: pd.DataFrame) -> None:
    out = tmp_path / "trained_models" / "run-7"
    rc = run_train.main(
        [
            "--training-dataframe", str(prepared(tmp_path, iris_df)),
            "--trained-model", str(out),
            "--run-id", "run-7",
            "--input-path", "raw/iris.csv",
        ]
    )  # fmt: skip
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "holdout.parquet",
        "metadata.json",
        "model.skops",
        "profile.json",
    ]
    meta = json.loads((out / "metadata.json").read_text())
    assert set(meta) == METADATA_KEYS
    assert meta["model_sha256"] == hashlib.sha256((out / "model.skops").read_bytes()).hexdigest()
    assert meta["run_id"] == "run-7"
    assert meta["input_path"] == "raw/iris.csv"
    assert meta["model_file"] == "model.skops"
    assert meta["metrics"]["accuracy"] > 0.8
    assert meta["classes"] == ["setosa", "versicolor", "virginica"]
    assert meta["feature_names"] == list(iris_df.columns[:-1])
    assert meta["n_train"] + meta["n_test"] == 150
    model = load_model(out / "model.skops")
    assert (model.predict(iris_df.iloc[:, :4]) == iris_df["target"]).mean() > 0.9
    # The held-out rows, on which the recorded accuracy was measured.
    holdout = pd.read_parquet(out / "holdout.parquet")
    assert len(holdout) == meta["n_test"]
    assert list(holdout.columns) == [*meta["feature_names"], "target"]
    accuracy = (model.predict(holdout.iloc[:, :4]) == holdout["target"]).mean()
    assert accuracy == pytest.approx(meta["metrics"]["accuracy"])


def test_main_missing_prepared_returns_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    rc = run_train.main(
        ["--training-dataframe", str(tmp_path / "empty"), "--trained-model", str(tmp_path / "o"),
         "--run-id", "r"]
    )  # fmt: skip
    assert rc == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("error: prepared.parquet not found")
    )


def test_crash_while_saving_model_leaves_no_marker(
    tmp_path: Path, iris_df: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "metadata.json").write_text("{}")  # left over from an earlier attempt

    def half_write(model: object, path: Path) -> None:
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(somemodel.persistence, "save_model", half_write)
    with pytest.raises(OSError, match="disk full"):
        run_train.main(
            ["--training-dataframe", str(prepared(tmp_path, iris_df)), "--trained-model",
             str(out), "--run-id", "r"]
        )  # fmt: skip
    assert list(out.iterdir()) == []


class _RecordingMlflow:
    """The two calls the step makes, as mlflow (with azureml-mlflow) takes them on AML."""

    def __init__(self) -> None:
        self.params: dict[str, object] = {}
        self.metrics: dict[str, float] = {}

    def log_params(self, params: dict[str, object]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self.metrics.update(metrics)


def test_held_out_metrics_go_to_the_job_when_mlflow_is_installed(
    iris_df: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The AML image installs mlflow-skinny and azureml-mlflow (aml_steps/requirements-mlflow.lock)
    # and AML sets the job's tracking URI: these become the job's metrics in Studio.
    recorder = _RecordingMlflow()
    monkeypatch.setitem(sys.modules, "mlflow", recorder)
    result = train(iris_df)
    assert log_to_mlflow(result, {"run_id": "r1"})
    assert recorder.params == {"run_id": "r1"}
    assert recorder.metrics["accuracy"] == result.metrics["accuracy"]
    assert {"f1_setosa", "precision_versicolor", "recall_virginica"} <= set(recorder.metrics)


def test_without_mlflow_the_step_skips_tracking(
    iris_df: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    assert not log_to_mlflow(train(iris_df), {})
