"""Random CSV-like bytes through the score step's functions.

Each input either scores (one output row per input row, probabilities that sum
to 1) or fails with ScoreError and a message naming the problem: never a
traceback from inside pandas, pyarrow or the model.
"""

from __future__ import annotations

import csv
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from score import (
    ScoreError,
    TrainedModel,
    build_manifest,
    load_trained_model,
    score_batch,
    score_files,
)
from train import build_metadata, train

from somemodel.artifacts import PREDICTIONS_FILENAME, save_model_file, write_metadata
from tests.fuzz.csv_strategies import cells, csv_bytes

FEATURES = ["f1", "f2"]
ID = "id"
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(40, 2)), columns=FEATURES)
    df["target"] = np.where(df["f1"] > 0, "x", "y")
    result = train(df)
    folder = tmp_path_factory.mktemp("model")
    sha256 = save_model_file(result.model, folder)
    metadata = build_metadata(
        result,
        run_id="train-fuzz",
        input_path="raw/fuzz.csv",
        target_col="target",
        model_sha256=sha256,
        created_at=datetime.now(UTC),
    )
    write_metadata(metadata, folder)
    return load_trained_model(folder)


def _count_rows(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


@FUZZ
@given(data=csv_bytes([ID, *FEATURES]), chunk_size=st.sampled_from([1, 3, 100_000]))
@example(data=b"", chunk_size=1)
@example(data=b"   \n", chunk_size=1)
@example(data=b"\xef\xbb\xbff1,f2\r\n1,2", chunk_size=1)
@example(data=b"f1,f2\n\xff\xfe,1\n", chunk_size=1)
@example(data=b"\xff\xfef1,f2\n1,1\n", chunk_size=1)
@example(data=b'f1,"f2\n1,2\n', chunk_size=1)
@example(data=b"f1,f2\n1,2,3\n4,5,6\n", chunk_size=1)
@example(data=b"f1,f2,f1\n1,2,x\n", chunk_size=1)
@example(data=b"f1,f2\n99999999999999999999999,1\n", chunk_size=1)
def test_score_files_scores_or_fails_clearly(
    trained: TrainedModel, data: bytes, chunk_size: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "in").mkdir()
        (folder / "in" / "week.csv").write_bytes(data)
        out = folder / "out"
        try:
            summaries = score_files(
                trained, folder / "in", out, id_column=ID, chunk_size=chunk_size
            )
        except ScoreError as exc:
            refusal = str(exc)
        else:
            refusal = None
        if refusal is not None:
            assert refusal.strip()
            assert not (out / PREDICTIONS_FILENAME).exists()
            assert [p.name for p in out.glob("*")] == [] if out.exists() else True
            event("refused")
            return
        event("scored")
        predictions = out / PREDICTIONS_FILENAME
        assert _count_rows(predictions) == sum(s.rows for s in summaries)
        frame = pd.read_csv(predictions, keep_default_na=False)
        if len(frame):
            probabilities = frame[[f"proba_{c}" for c in trained.model.classes_]].to_numpy()
            np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
            assert set(frame["predicted_class"]) <= {str(c) for c in trained.model.classes_}
        manifest = build_manifest(
            run_id="score-fuzz", trained=trained, inputs=summaries, created_at=datetime.now(UTC)
        )
        assert manifest.output_rows == len(frame)


# Arrow types a caller may hand to score_batch, with values of each.
_KINDS = {
    "float": (pa.float64(), st.floats(min_value=-1e6, max_value=1e6)),
    "odd float": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "int": (pa.int64(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    "bool": (pa.bool_(), st.booleans()),
    "text": (pa.string(), cells()),
}


@st.composite
def batches(draw: st.DrawFn) -> pa.RecordBatch:
    """Mostly the features plus extras (so that many batches score), else any columns.

    Sometimes one name appears twice, as a hand-built batch (not a CSV) allows.
    """
    extras = st.lists(st.sampled_from([ID, "other", "ü"]), max_size=2, unique=True)
    anything = st.lists(
        st.sampled_from([*FEATURES, ID, "other", "ü"]), min_size=0, max_size=5, unique=True
    )
    columns = draw(st.one_of(extras.map(lambda extra: [*FEATURES, *extra]), anything))
    if columns and draw(st.integers(min_value=0, max_value=3)) == 0:
        columns.append(draw(st.sampled_from(columns)))  # a name twice
    n_rows = draw(st.integers(min_value=1, max_value=8))
    arrays = []
    for _ in columns:
        kind, values = _KINDS[draw(st.sampled_from(["float", "float", *_KINDS]))]
        if draw(st.booleans()):
            values = st.one_of(values, st.none())
        cells_ = draw(st.lists(values, min_size=n_rows, max_size=n_rows))
        arrays.append(pa.array(cells_, kind))
    if not columns:
        return pa.RecordBatch.from_pydict({})
    return pa.RecordBatch.from_arrays(arrays, names=columns)


@FUZZ
@given(batch=batches(), row_offset=st.integers(min_value=0, max_value=10**9))
def test_score_batch_scores_or_fails_clearly(
    trained: TrainedModel, batch: pa.RecordBatch, row_offset: int
) -> None:
    try:
        scored = score_batch(trained.model, batch, FEATURES, ID, row_offset, "week.csv")
    except ScoreError as exc:
        refusal = str(exc)
    else:
        refusal = None
    if refusal is not None:
        assert refusal.strip()
        event("refused")
        return
    event("scored")
    assert len(scored) == batch.num_rows
    assert scored.row_ids.null_count == 0
    np.testing.assert_allclose(scored.proba.sum(axis=1), 1.0)


@pytest.mark.parametrize(
    "data", [b"\xff\xfef1,f2\n1,1\n", b'f1,"f2\n1,2\n'], ids=["bytes", "quote"]
)
def test_unreadable_header_is_a_score_error(
    trained: TrainedModel, tmp_path: Path, data: bytes
) -> None:
    (tmp_path / "week.csv").write_bytes(data)
    with pytest.raises(ScoreError, match=r"week\.csv"):
        score_files(trained, tmp_path / "week.csv", tmp_path / "out", id_column=ID)


def test_score_batch_on_zero_rows(trained: TrainedModel) -> None:
    empty = pa.RecordBatch.from_pydict(
        {"f1": pa.array([], pa.float64()), "f2": pa.array([], pa.int64())}
    )
    scored = score_batch(trained.model, empty, FEATURES, ID, 0, "week.csv")
    assert len(scored) == 0
    assert scored.proba.shape == (0, 2)
