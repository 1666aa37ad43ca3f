"""Fit SomeModel on a prepared table and score it on a stratified held-out split.

The model folder it leads to (model file, then ``metadata.json`` last) is written
by ``somemodel.artifacts``, the one contract its readers use too.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.model_selection import train_test_split

from somemodel import SomeModel
from somemodel.artifacts import HOLDOUT_FILENAME, ModelMetadata, atomic_output
from somemodel.profile import DataProfile, training_profile

logger = logging.getLogger(__name__)

PREPARED_FILENAME = "prepared.parquet"
_SHOWN_CLASSES = 10
# A numeric target with more distinct values than this, and more than this share of
# the rows, is a measurement, not classes (issue 16: 1,000 "classes" from 1,000 floats).
_CONTINUOUS_MIN_CLASSES = 20
_CONTINUOUS_MIN_SHARE = 0.05


class TrainError(ValueError):
    """The training data cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class TrainResult:
    model: SomeModel
    metrics: dict[str, Any]
    n_train: int
    n_test: int
    holdout: pd.DataFrame | None = None
    profile: DataProfile | None = None


def _json_value(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _check_splittable(y: pd.Series, test_size: float) -> None:
    if not 0.0 < test_size < 1.0:
        raise TrainError(f"test_size must be between 0 and 1 (exclusive), got {test_size}")
    counts = y.value_counts()
    if len(counts) < 2:
        only = counts.index[0] if len(counts) else None
        raise TrainError(f"the target has a single class {only!r}: need at least 2")
    rare = counts[counts < 2]
    if not rare.empty:
        shown = [_json_value(c) for c in rare.index[:_SHOWN_CLASSES]]
        which = (
            f"classes {shown}"
            if len(rare) <= _SHOWN_CLASSES
            else f"{len(rare):,} of the {len(counts):,} classes (e.g. {shown})"
        )
        raise TrainError(
            f"{which} have fewer than 2 rows: a stratified split needs at least 2 rows per class"
        )
    n = len(y)
    # Same rounding as sklearn's train_test_split.
    n_test = math.ceil(test_size * n)
    n_train = math.floor((1.0 - test_size) * n)
    if min(n_test, n_train) < len(counts):
        raise TrainError(
            f"too few rows ({n}) for a stratified split with test_size={test_size} and "
            f"{len(counts)} classes: train/test would get {n_train}/{n_test} rows, "
            f"each needs at least {len(counts)}"
        )


def check_classification_target(y: pd.Series, target_col: str) -> None:
    """Refuse a target that looks like a measurement rather than class labels.

    Labels that are all numbers, with more than ``_CONTINUOUS_MIN_CLASSES`` distinct
    values that are also more than ``_CONTINUOUS_MIN_SHARE`` of the rows, are taken
    for a continuous target: a classifier would learn one class per value.
    """
    n_rows, n_distinct = len(y), int(y.nunique())
    if n_distinct <= _CONTINUOUS_MIN_CLASSES or n_distinct <= _CONTINUOUS_MIN_SHARE * n_rows:
        return
    numbers = pd.to_numeric(pd.Series(y.to_numpy(dtype=object)), errors="coerce")
    if numbers.isna().any():
        return
    raise TrainError(
        f"the target {target_col!r} looks continuous ({n_distinct:,} distinct values in "
        f"{n_rows:,} rows): somemodel is a classifier; give a column of class labels as the "
        "target, or bin the values into a few classes"
    )


def train(
    df: pd.DataFrame, target_col: str = "target", test_size: float = 0.2, random_state: int = 42
) -> TrainResult:
    """Fit on a stratified train split and report metrics on the held-out split."""
    if target_col not in df.columns:
        raise TrainError(f"target column {target_col!r} not found; columns are {list(df.columns)}")
    features = [c for c in df.columns if c != target_col]
    if not features:
        raise TrainError("no feature columns")
    non_numeric = [
        str(c)
        for c in features
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])
    ]
    if non_numeric:
        raise TrainError(f"feature columns must be numeric, these are not: {non_numeric}")
    x = df[features].astype(np.float64)
    if not np.isfinite(x.to_numpy()).all():
        raise TrainError("features contain NaN or infinite values: run data_prep first")
    y = df[target_col]
    if y.isna().any():
        raise TrainError(f"target column {target_col!r} has missing values: run data_prep first")
    check_classification_target(y, target_col)
    _check_splittable(y, test_size)

    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=random_state, stratify=y
    )
    model = SomeModel(random_state=random_state).fit(x_train, y_train.to_numpy())
    predicted = model.predict(x_test)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_test.to_numpy(), predicted, labels=model.classes_, zero_division=0
    )
    per_class = {
        str(cls): {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "support": int(s),
        }
        for cls, p, r, f, s in zip(model.classes_, precision, recall, f1, support, strict=True)
    }
    metrics = {
        "accuracy": float(accuracy_score(y_test.to_numpy(), predicted)),
        "per_class": per_class,
    }
    logger.info(
        "trained on %d rows, accuracy %.4f on %d held-out rows",
        len(x_train),
        metrics["accuracy"],
        len(x_test),
    )
    holdout = x_test.assign(**{target_col: y_test})
    return TrainResult(
        model=model,
        metrics=metrics,
        n_train=len(x_train),
        n_test=len(x_test),
        holdout=holdout,
        profile=profile_training_data(x, y, model),
    )


def profile_training_data(x: pd.DataFrame, y: pd.Series, model: SomeModel) -> DataProfile:
    """The profile scoring compares with: every prepared row (train and held-out), each
    feature's deciles, range and missing cells, and the class balance.
    """
    # A float64 frame is one column-major block: its transpose is (features, rows), no copy.
    by_column = x.to_numpy(dtype=np.float64).T
    return training_profile(by_column, [str(c) for c in x.columns], y.to_numpy(), model.classes_)


def build_metadata(
    result: TrainResult,
    *,
    run_id: str,
    input_path: str,
    target_col: str,
    model_sha256: str,
    created_at: datetime,
    profile_file: str | None = None,
) -> ModelMetadata:
    """The content of ``metadata.json``: everything needed to verify and trace a model."""
    return ModelMetadata.for_model(
        result.model,
        model_sha256=model_sha256,
        run_id=run_id,
        input_path=input_path,
        target_col=target_col,
        metrics=result.metrics,
        n_train=result.n_train,
        n_test=result.n_test,
        created_at=created_at,
        profile_file=profile_file,
    )


def read_prepared(folder: Path) -> pd.DataFrame:
    """The data-prep step's ``prepared.parquet`` inside ``folder``."""
    path = folder / PREPARED_FILENAME
    if not path.is_file():
        raise TrainError(f"{PREPARED_FILENAME} not found in {folder}: is it a data-prep output?")
    return pd.read_parquet(path, engine="pyarrow")


def write_holdout(holdout: pd.DataFrame, out_dir: Path) -> Path:
    """Write the held-out rows next to the model (before the metadata, which marks completion)."""
    with atomic_output(Path(out_dir) / HOLDOUT_FILENAME) as tmp:
        holdout.reset_index(drop=True).to_parquet(tmp, engine="pyarrow", index=False)
    return Path(out_dir) / HOLDOUT_FILENAME


def log_to_mlflow(result: TrainResult, params: dict[str, Any]) -> bool:
    """Log params and metrics to MLflow when it is installed; AML sets the tracking URI."""
    try:
        import mlflow  # optional: installed on AML, absent locally
    except ImportError:
        logger.info("mlflow is not installed: skipping experiment tracking")
        return False
    mlflow.log_params(params)
    metrics = {"accuracy": result.metrics["accuracy"]}
    for cls, values in result.metrics["per_class"].items():
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in cls)
        metrics.update(
            {f"{name}_{safe}": float(values[name]) for name in ("precision", "recall", "f1")}
        )
    mlflow.log_metrics(metrics)
    return True
