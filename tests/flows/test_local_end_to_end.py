"""`make run` and then the weekly scoring, as a developer runs them: the real local compute.

Each step runs in a subprocess in the cached step environment (the built wheel
and the pinned packages), on the local datastore. The flows' orchestration is
tested on the in-process compute (test_train_flow.py, test_score_flow.py); this
checks that the same flows work end to end on the backend `make run` uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.datastore import LocalDatastore
from flows.score import main as score_main
from flows.train import main as train_main
from tests.conftest import TEST_CACHE_DIR

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_train_then_score_the_bundled_samples(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "datastore"
    monkeypatch.setenv("SOMEMODEL_LOCAL_DATASTORE_ROOT", str(root))
    monkeypatch.setenv("SOMEMODEL_CACHE_DIR", str(TEST_CACHE_DIR))
    store = LocalDatastore(root)

    assert train_main([]) == 0, capsys.readouterr().err
    trained = json.loads((root / "trained_models" / "latest.json").read_text())
    assert "promoted:  yes" in capsys.readouterr().out
    steps = store.list_files(f"trained_models/{trained['run_id']}")
    assert f"trained_models/{trained['run_id']}/_COMPLETE.json" in steps  # LocalCompute's marker

    assert score_main([]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"model:       {trained['run_id']}" in out
    assert "rows:        30 (" in out
    # The real step scripts in the wheel's venv: a training profile, a drift report; 30 rows
    # of the training distribution stay under their noise floor (docs/score.md, "Drift").
    assert f"trained_models/{trained['run_id']}/profile.json" in steps
    assert "drift:       no drift: largest feature PSI" in out
    scored = json.loads((root / "predictions" / "latest.json").read_text())
    manifest = json.loads((root / "predictions" / scored["run_id"] / "manifest.json").read_text())
    assert manifest["model_run_id"] == trained["run_id"]
    assert manifest["output_rows"] == 30
    drift = json.loads((root / "predictions" / scored["run_id"] / "drift.json").read_text())
    assert (drift["status"], drift["rows"]) == ("compared", 30)
