"""The scored-files index: claims by compare-and-swap, exactly once across runs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.datastore import LocalDatastore
from flows.scored_files import InputFile, ScoredFiles, ScoredFilesError

A = InputFile("raw/score/a.csv", "fa")
B = InputFile("raw/score/b.csv", "fb")


@pytest.fixture
def store(tmp_path: Path) -> LocalDatastore:
    return LocalDatastore(tmp_path / "ds")


def test_new_files_are_claimed_then_skipped_once_scored(store: LocalDatastore) -> None:
    index = ScoredFiles(store)
    first = index.claim("run-1", [A, B])
    assert first.files == (A, B)
    index.mark_scored("run-1", first.files)
    assert index.scored_by("run-1") == [A.path, B.path]

    second = index.claim("run-2", [A, B])
    assert second.nothing_new
    assert second.already_scored == (A, B)


def test_a_file_replaced_with_new_content_is_new(store: LocalDatastore) -> None:
    index = ScoredFiles(store)
    index.mark_scored("run-1", index.claim("run-1", [A]).files)
    changed = InputFile(A.path, "fa-2")
    assert index.claim("run-2", [changed]).files == (changed,)


def test_the_same_run_id_keeps_its_files_on_retry(store: LocalDatastore) -> None:
    index = ScoredFiles(store, is_running=lambda run_id: True)
    index.claim("run-1", [A])
    again = index.claim("run-1", [A, B])
    assert again.files == (A, B)
    index.mark_scored("run-1", again.files)
    # Resumed after it finished: the same files, so its predictions stay the same.
    assert index.claim("run-1", [A, B]).files == (A, B)


def test_a_running_claim_is_left_alone_a_dead_one_taken_over(store: LocalDatastore) -> None:
    alive = {"run-1"}
    index = ScoredFiles(store, is_running=lambda run_id: run_id in alive)
    index.claim("run-1", [A])
    blocked = index.claim("run-2", [A, B])
    assert blocked.files == (B,)
    assert blocked.claimed_elsewhere == (A,)

    alive.clear()  # run-1 crashed
    assert index.claim("run-3", [A]).files == (A,)
    # run-1 comes back late: its predictions must not count.
    with pytest.raises(ScoredFilesError, match="lost its claim"):
        index.mark_scored("run-1", [A])


def test_a_claim_older_than_the_lease_is_taken_over(store: LocalDatastore) -> None:
    now = [datetime(2026, 11, 23, 8, tzinfo=UTC)]
    index = ScoredFiles(
        store, is_running=lambda run_id: True, lease=timedelta(hours=1), clock=lambda: now[0]
    )
    index.claim("run-1", [A])
    assert index.claim("run-2", [A]).nothing_new
    now[0] += timedelta(hours=2)
    assert index.claim("run-2", [A]).files == (A,)


def test_release_frees_the_claims_of_a_run_that_gives_up(store: LocalDatastore) -> None:
    index = ScoredFiles(store, is_running=lambda run_id: True)
    index.claim("run-1", [A, B])
    assert index.release("run-1") == 2
    assert index.claim("run-2", [A]).files == (A,)


def test_concurrent_claims_give_each_file_to_one_run(store: LocalDatastore) -> None:
    files = [InputFile(f"raw/score/{i}.csv", f"f{i}") for i in range(20)]
    got: dict[str, tuple[InputFile, ...]] = {}
    start = threading.Barrier(4)

    def claim(run_id: str) -> None:
        index = ScoredFiles(store, is_running=lambda run_id: True)
        start.wait()
        got[run_id] = index.claim(run_id, files).files

    threads = [threading.Thread(target=claim, args=(f"run-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [item for files_of_run in got.values() for item in files_of_run]
    assert sorted(claimed, key=lambda f: f.path) == sorted(files, key=lambda f: f.path)


def test_a_corrupt_index_says_how_to_recover(store: LocalDatastore) -> None:
    store.write_conditional("scored_files/index.json", "{not json", etag=None)
    with pytest.raises(ScoredFilesError, match="delete it to score every file again"):
        ScoredFiles(store).claim("run-1", [A])
