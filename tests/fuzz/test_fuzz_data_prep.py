"""Random CSV-like bytes through the data-prep step (and on into train).

Each input either gives a clean table that writes to Parquet and trains, or
fails with the step's own error type (DataPrepError / TrainError) and a
message naming the problem: never a traceback from inside pandas, pyarrow or
scikit-learn.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from data_prep import DataPrepError, data_prep, read_csvs, write_prepared
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from train import TrainError, read_prepared, train

from tests.fuzz.csv_strategies import csv_bytes

TARGET = "target"
# Hundreds of generated files through the step code: seconds each, so the slow tier.
pytestmark = pytest.mark.slow
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _check_prepared(out: pd.DataFrame) -> None:
    assert list(out.columns)[-1] == TARGET
    features = out.drop(columns=[TARGET])
    assert len(features.columns) >= 1
    assert all(dtype == np.float64 for dtype in features.dtypes)
    assert np.isfinite(features.to_numpy()).all()
    assert not out[TARGET].isna().any()
    assert out[TARGET].nunique() >= 2
    assert out.index.equals(pd.RangeIndex(len(out)))


def _prepare(files: list[Path], out_dir: Path) -> pd.DataFrame | None:
    """The step's pure path; None when it refused the input with a clear DataPrepError."""
    try:
        out = data_prep(read_csvs(files), target_col=TARGET)
    except DataPrepError as exc:
        refusal = str(exc)
    else:
        refusal = None
    if refusal is not None:
        assert refusal.strip(), "a DataPrepError must say what is wrong"
        event("refused")
        return None
    _check_prepared(out)
    write_prepared(out, out_dir)
    event("prepared")
    return out


@FUZZ
@given(data=csv_bytes([TARGET, "f1", "f2"]))
@example(data=b"")
@example(data=b"   \n")
@example(data=b"\xef\xbb\xbf")
@example(data=b"target,f1\r\nx,1\r\ny,2")
@example(data=b"f1,f2,target\n1,2,x,9\n3,4,y,9\n")
@example(data=b"f1,target\n99999999999999999999999,x\n1,y\n2,x\n3,y\n")
@example(data=b'f1,"target\n1,x\n')
def test_one_file_prepares_or_fails_clearly(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _prepare([_write(folder, "in.csv", data)], folder / "out")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=csv_bytes([TARGET, "f1"]), second=csv_bytes([TARGET, "f1"]))
@example(first=b"f1,target\n1,1\n2,2\n3,1\n", second=b"f1,target\n4,a\n5,b\n6,a\n")
def test_two_files_stack_or_fail_clearly(first: bytes, second: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = [_write(folder, "a.csv", first), _write(folder, "b.csv", second)]
        _prepare(files, folder / "out")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=csv_bytes([TARGET, "f1", "f2"]), test_size=st.sampled_from([0.2, 0.5]))
@example(data=b"f1,target\n1,1\n2,x\n3,1\n4,x\n5,1\n6,x\n", test_size=0.5)
def test_prepared_output_trains_or_fails_clearly(data: bytes, test_size: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if _prepare([_write(folder, "in.csv", data)], folder / "out") is None:
            return
        try:
            result = train(read_prepared(folder / "out"), target_col=TARGET, test_size=test_size)
        except TrainError as exc:
            refusal = str(exc)
        else:
            refusal = None
        if refusal is not None:
            assert refusal.strip(), "a TrainError must say what is wrong"
            event("train refused")
            return
        event("trained")
        assert 0.0 <= result.metrics["accuracy"] <= 1.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"   \n  \n", "empty"),
        (b"f1,f2,target\n1,2,x,9\n3,4,y,9\n", "more fields than the header"),
        (b"f1,target\n99999999999999999999999,x\n1,y\n", None),
    ],
    ids=["whitespace-only", "extra-field-every-row", "huge-integer"],
)
def test_inputs_found_by_fuzzing(tmp_path: Path, data: bytes, message: str | None) -> None:
    """Each of these once escaped as a pandas error or was silently misread."""
    path = _write(tmp_path, "in.csv", data)
    if message is None:
        out = data_prep(read_csvs([path]), target_col=TARGET)
        assert out["f1"].tolist() == [1e23, 1.0]
        return
    with pytest.raises(DataPrepError, match=message):
        data_prep(read_csvs([path]), target_col=TARGET)
