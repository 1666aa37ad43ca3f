"""The run ledger on a real local datastore: layout, reuse records, completion, latest pointers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows.datastore import LocalDatastore
from flows.ledger import (
    COMPLETION_MARKER,
    CompletionMarker,
    LedgerError,
    ReuseRecord,
    RunLedger,
    is_ledger_file,
    latest_path,
    model_dir,
    model_metadata_path,
    prediction_parts_dir,
    predictions_dir,
    predictions_manifest_path,
    predictions_path,
    prepared_dir,
    reuse_record_path,
)


@dataclass(frozen=True)
class Run:
    run_id: str
    created_at: str

    def pointer(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "created_at": self.created_at, "extra": 1}


@pytest.fixture
def store(tmp_path: Path) -> LocalDatastore:
    return LocalDatastore(tmp_path / "store")


@pytest.fixture
def ledger(store: LocalDatastore) -> RunLedger:
    return RunLedger(store)


def test_layout() -> None:
    assert prepared_dir("r-1") == "prepared_dataframes/r-1"
    assert model_dir("r-1") == "trained_models/r-1"
    assert model_metadata_path("r-1") == "trained_models/r-1/metadata.json"
    assert predictions_dir("s-1") == "predictions/s-1"
    assert predictions_path("s-1") == "predictions/s-1/predictions.csv"
    assert predictions_manifest_path("s-1") == "predictions/s-1/manifest.json"
    assert prediction_parts_dir("s-1") == "prediction_parts/s-1"
    assert latest_path("trained_models") == "trained_models/latest.json"
    assert reuse_record_path("train", "abc") == "step_cache/train/abc.json"
    assert is_ledger_file(f"trained_models/r-1/{COMPLETION_MARKER}")
    assert not is_ledger_file("trained_models/r-1/model.skops")


def test_reuse_record_round_trip(ledger: RunLedger, store: LocalDatastore) -> None:
    assert ledger.reuse_record("train", "k1") is None
    record = ReuseRecord("run-one", "run-one-train", {"trained_model": "trained_models/run-one"})
    assert ledger.record_reuse("train", "k1", record)
    assert ledger.reuse_record("train", "k1") == record
    assert json.loads((store.root / "step_cache/train/k1.json").read_text())["outputs"] == {
        "trained_model": "trained_models/run-one"
    }
    newer = ReuseRecord("run-two", "run-two-train", {"trained_model": "trained_models/run-two"})
    assert ledger.record_reuse("train", "k1", newer)
    assert ledger.reuse_record("train", "k1") == newer


def test_a_broken_reuse_record_counts_as_none(
    ledger: RunLedger, store: LocalDatastore, caplog: pytest.LogCaptureFixture
) -> None:
    store.write_conditional(reuse_record_path("train", "k1"), '{"run_id": 3}', etag=None)
    assert ledger.reuse_record("train", "k1") is None
    assert "is not a reuse record" in caplog.text


def test_completion_markers(ledger: RunLedger, store: LocalDatastore) -> None:
    outputs = ["prepared_dataframes/r-1", "trained_models/r-1"]
    assert not ledger.is_complete(outputs)
    ledger.mark_complete(outputs[:1], CompletionMarker("r-1-train", "env@1", 1.23456))
    assert not ledger.is_complete(outputs)
    ledger.mark_complete(outputs, CompletionMarker("r-1-train", "env@1", 1.23456))
    assert ledger.is_complete(outputs)
    marker = json.loads((store.root / outputs[1] / COMPLETION_MARKER).read_text())
    assert marker == {"job_name": "r-1-train", "environment": "env@1", "duration_seconds": 1.235}


def test_latest_pointer_moves_forward_only(ledger: RunLedger, store: LocalDatastore) -> None:
    assert ledger.latest("trained_models") is None
    assert ledger.promote("trained_models", Run("train-b", "2026-11-23T10:00:00+00:00"))
    assert not ledger.promote("trained_models", Run("train-a", "2026-11-22T10:00:00+00:00"))
    pointer = ledger.latest("trained_models")
    assert pointer is not None
    assert (pointer.run_id, pointer.created_at) == ("train-b", "2026-11-23T10:00:00+00:00")
    assert pointer.record["extra"] == 1
    assert ledger.promote("trained_models", Run("train-c", "2026-11-24T10:00:00+00:00"))
    assert json.loads((store.root / "trained_models/latest.json").read_text())["run_id"] == (
        "train-c"
    )
    assert ledger.latest("predictions") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not valid JSON"),
        ("[1]", "holds a JSON list, not an object"),
        ('{"created_at": "2026-11-23"}', "names no valid run id"),
        ('{"run_id": "../../etc"}', "names no valid run id"),
    ],
)
def test_a_broken_pointer_is_refused_on_read_and_replaced_on_promote(
    ledger: RunLedger, store: LocalDatastore, text: str, message: str
) -> None:
    store.write_conditional("trained_models/latest.json", text, etag=None)
    with pytest.raises(LedgerError, match=message):
        ledger.latest("trained_models")
    assert ledger.promote("trained_models", Run("train-a", "2026-11-22T10:00:00+00:00"))
    pointer = ledger.latest("trained_models")
    assert pointer is not None
    assert pointer.run_id == "train-a"


# --- pointers that must not stick (issue 16, class 6) -----------------------------------------


def _now_plus(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


@pytest.mark.parametrize("root", ["trained_models", "predictions"])
def test_a_pointer_that_is_not_utf8_is_named_on_read_and_replaced_on_promote(
    ledger: RunLedger, store: LocalDatastore, root: str, caplog: pytest.LogCaptureFixture
) -> None:
    (store.root / root).mkdir(parents=True)
    (store.root / root / "latest.json").write_bytes(b'\xff\xfe{"run_id": "train-x"}')
    with pytest.raises(LedgerError, match=rf"{root}/latest.json .*not UTF-8"):
        ledger.latest(root)
    assert ledger.promote(root, Run("train-a", _now_plus(0)))
    pointer = ledger.latest(root)
    assert pointer is not None
    assert pointer.run_id == "train-a"
    assert f"Replacing {root}/latest.json" in caplog.text


@pytest.mark.parametrize("created_at", ["5", "null", '"yesterday"', '["2026-11-22"]'])
def test_a_pointer_without_a_timestamp_is_replaced_with_a_warning(
    ledger: RunLedger, store: LocalDatastore, created_at: str, caplog: pytest.LogCaptureFixture
) -> None:
    text = f'{{"run_id": "train-old", "created_at": {created_at}}}'
    store.write_conditional("predictions/latest.json", text, etag=None)
    assert ledger.promote("predictions", Run("train-a", "2026-11-22T10:00:00+00:00"))
    assert "predictions/latest.json" in caplog.text
    assert "created_at" in caplog.text
    assert "train-old" in caplog.text


def test_a_pointer_from_the_future_is_suspect_and_replaced(
    ledger: RunLedger, store: LocalDatastore, caplog: pytest.LogCaptureFixture
) -> None:
    assert ledger.promote("trained_models", Run("train-skewed", _now_plus(60 * 24)))
    assert ledger.promote("trained_models", Run("train-a", _now_plus(0)))
    pointer = ledger.latest("trained_models")
    assert pointer is not None
    assert pointer.run_id == "train-a"
    assert "in the future" in caplog.text
    assert "train-skewed" in caplog.text


def test_a_pointer_a_little_ahead_still_counts_as_newer(ledger: RunLedger) -> None:
    assert ledger.promote("trained_models", Run("train-b", _now_plus(2)))
    assert not ledger.promote("trained_models", Run("train-a", _now_plus(0)))


def test_timestamps_compare_as_times_not_text(ledger: RunLedger) -> None:
    # 11:00 in UTC+02:00 is 09:00 UTC: earlier than 10:00 UTC, though it sorts after as text.
    assert ledger.promote("trained_models", Run("train-b", "2026-11-22T11:00:00+02:00"))
    assert ledger.promote("trained_models", Run("train-a", "2026-11-22T10:00:00+00:00"))
