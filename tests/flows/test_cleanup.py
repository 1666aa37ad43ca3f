"""Retention: which intermediate folders go, and which stay."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from flows.cleanup import Folder, _folders, plan_cleanup, run_date
from flows.datastore import LocalDatastore


def test_run_dates_come_from_run_ids() -> None:
    assert run_date("train-2026-11-23-1a2b3c4d") == date(2026, 11, 23)
    assert run_date("score-2026-02-30-1a2b3c4d") is None
    assert run_date("my-own-run") is None


def test_old_unprotected_folders_go_the_rest_stays() -> None:
    def folder(run_id: str) -> Folder:
        return Folder("prepared_dataframes", run_id, (f"prepared_dataframes/{run_id}/p.parquet",))

    old, recent, latest, undated = (
        folder("train-2026-10-01-aaaaaaaa"),
        folder("train-2026-11-20-bbbbbbbb"),
        folder("train-2026-09-01-cccccccc"),
        folder("nightly"),
    )
    plan = plan_cleanup(
        [old, recent, latest, undated], date(2026, 11, 30), 28, {"train-2026-09-01-cccccccc"}
    )
    assert plan.delete == (old,)
    assert dict(plan.kept) == {
        "prepared_dataframes/train-2026-09-01-cccccccc": "in use (latest, or a run still going)",
        "prepared_dataframes/nightly": "no date in its run id",
    }


def test_only_intermediate_roots_are_listed_and_delete_leaves_no_empty_folder(
    tmp_path: Path,
) -> None:
    store = LocalDatastore(tmp_path / "ds")
    for path in (
        "prepared_dataframes/train-2026-10-01-aaaaaaaa/prepared.parquet",
        "score_batches/score-2026-10-01-aaaaaaaa/files.txt",
        "trained_models/train-2026-10-01-aaaaaaaa/model.skops",
        "predictions/score-2026-10-01-aaaaaaaa/predictions.csv",
    ):
        store.write_conditional(path, "x", etag=None)
    folders = _folders(store)
    assert sorted(f.path for f in folders) == [
        "prepared_dataframes/train-2026-10-01-aaaaaaaa",
        "score_batches/score-2026-10-01-aaaaaaaa",
    ]
    assert store.delete_file("score_batches/score-2026-10-01-aaaaaaaa/files.txt")
    assert not store.delete_file("score_batches/score-2026-10-01-aaaaaaaa/files.txt")
    assert not (store.root / "score_batches").exists()
