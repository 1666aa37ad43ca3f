"""The Datastore contract, run against every implementation (a folder and Azurite)."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from flows.datastore import Datastore, DatastoreNotFoundError, PreconditionFailedError
from flows.datastore.base import DatastoreError, sha256_of_file
from flows.datastore.transfer import download, resolve_input, upload_folder


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _read(store: Datastore, path: str, tmp_path: Path) -> str:
    local = tmp_path / "read" / path
    store.download_file(path, local)
    return local.read_text()


def test_upload_download_round_trip(store: Datastore, tmp_path: Path) -> None:
    store.upload_file(_file(tmp_path, "a.csv", "x,y\n1,2\n"), "raw/a.csv")
    assert store.exists("raw/a.csv")
    assert not store.exists("raw")
    assert not store.exists("raw/b.csv")
    store.download_file("raw/a.csv", tmp_path / "out" / "a.csv")
    assert (tmp_path / "out" / "a.csv").read_text() == "x,y\n1,2\n"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.csv"]


def test_upload_does_not_overwrite_unless_told(store: Datastore, tmp_path: Path) -> None:
    src = _file(tmp_path, "a.csv", "1")
    store.upload_file(src, "a.csv")
    with pytest.raises(DatastoreError, match="already exists"):
        store.upload_file(_file(tmp_path, "c.csv", "3"), "a.csv")
    assert _read(store, "a.csv", tmp_path) == "1"
    store.upload_file(_file(tmp_path, "b.csv", "2"), "a.csv", overwrite=True)
    assert _read(store, "a.csv", tmp_path) == "2"


def test_missing_file_names_path_and_datastore(store: Datastore, tmp_path: Path) -> None:
    where = re.escape(store.describe())
    with pytest.raises(DatastoreNotFoundError, match=rf"'raw/nope.csv'.*{where}"):
        store.download_file("raw/nope.csv", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_paths_cannot_escape_the_root(store: Datastore) -> None:
    with pytest.raises(DatastoreError, match="escapes"):
        store.exists("../outside")


def test_resolve_input_file_folder_and_missing(store: Datastore, tmp_path: Path) -> None:
    store.upload_file(_file(tmp_path, "a.csv", "1"), "raw/a.csv")
    store.upload_file(_file(tmp_path, "b.csv", "2"), "raw/sub/b.csv")
    store.upload_file(_file(tmp_path, "c.csv", "3"), "rawer/c.csv")
    assert resolve_input(store, "raw/a.csv") == ("uri_file", ["raw/a.csv"])
    assert resolve_input(store, "raw") == ("uri_folder", ["raw/a.csv", "raw/sub/b.csv"])
    assert resolve_input(store, "raw/") == ("uri_folder", ["raw/a.csv", "raw/sub/b.csv"])
    with pytest.raises(DatastoreNotFoundError, match=r"'raw/missing'.*does not exist"):
        resolve_input(store, "raw/missing")


def test_list_files_of_a_missing_folder_is_empty(store: Datastore) -> None:
    assert store.list_files("nothing/here") == []


def test_download_folder_keeps_relative_layout(store: Datastore, tmp_path: Path) -> None:
    store.upload_file(_file(tmp_path, "a.csv", "1"), "raw/a.csv")
    store.upload_file(_file(tmp_path, "b.csv", "2"), "raw/sub/b.csv")
    local = download(store, "raw", tmp_path / "dl")
    assert (local / "a.csv").read_text() == "1"
    assert (local / "sub" / "b.csv").read_text() == "2"
    assert download(store, "raw/a.csv", tmp_path / "one").name == "a.csv"


def test_upload_folder(store: Datastore, tmp_path: Path) -> None:
    src = tmp_path / "out"
    (src / "nested").mkdir(parents=True)
    (src / "m.bin").write_bytes(b"m")
    (src / "nested" / "x.json").write_text("{}")
    written = upload_folder(store, src, "trained_models/r1")
    assert written == ["trained_models/r1/m.bin", "trained_models/r1/nested/x.json"]
    assert store.list_files("trained_models/r1") == written
    (src / "m.bin").write_bytes(b"m2")
    upload_folder(store, src, "trained_models/r1")
    assert _read(store, "trained_models/r1/m.bin", tmp_path) == "m2"


def test_fingerprint_is_the_content_sha256(store: Datastore, tmp_path: Path) -> None:
    src = _file(tmp_path, "a.csv", "x,y\n1,2\n")
    store.upload_file(src, "raw/a.csv")
    assert store.fingerprint("raw/a.csv") == f"sha256:{sha256_of_file(src)}"
    with pytest.raises(DatastoreNotFoundError, match=r"raw/none\.csv"):
        store.fingerprint("raw/none.csv")


def test_read_versioned_of_a_missing_file_is_none(store: Datastore) -> None:
    assert store.read_versioned("p/latest.json") is None


def test_conditional_write_create_and_update(store: Datastore) -> None:
    store.write_conditional("p/latest.json", '{"v": 1}', etag=None)
    with pytest.raises(PreconditionFailedError, match=r"p/latest\.json"):
        store.write_conditional("p/latest.json", '{"v": 2}', etag=None)
    current = store.read_versioned("p/latest.json")
    assert current is not None
    assert json.loads(current.text) == {"v": 1}
    store.write_conditional("p/latest.json", '{"v": 2}', etag=current.etag)
    with pytest.raises(PreconditionFailedError):
        store.write_conditional("p/latest.json", '{"v": 3}', etag=current.etag)
    after = store.read_versioned("p/latest.json")
    assert after is not None
    assert json.loads(after.text) == {"v": 2}
    assert after.etag != current.etag


def test_conditional_update_of_a_deleted_file_fails(store: Datastore) -> None:
    with pytest.raises(PreconditionFailedError):
        store.write_conditional("p/latest.json", "{}", etag='"0x8D0000000000000"')


def test_racing_conditional_writes_have_one_winner(store: Datastore) -> None:
    store.write_conditional("latest.json", "0", etag=None)
    first = store.read_versioned("latest.json")
    assert first is not None
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            store.write_conditional("latest.json", str(i), etag=first.etag)
            wins.append(i)
        except PreconditionFailedError:
            pass

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    final = store.read_versioned("latest.json")
    assert final is not None
    assert final.text == str(wins[0])


def test_list_skips_dot_files(store: Datastore, tmp_path: Path) -> None:
    store.write_conditional("x/latest.json", "{}", etag=None)
    store.upload_file(_file(tmp_path, "partial", "half"), "x/.tmp-partial")
    assert store.list_files("x") == ["x/latest.json"]


def test_delete_file_removes_it_and_the_folder_it_emptied(store: Datastore, tmp_path: Path) -> None:
    store.upload_file(_file(tmp_path, "a", "a"), "old/run-1/a.csv")
    store.upload_file(_file(tmp_path, "b", "b"), "old/run-2/b.csv")
    assert store.delete_file("old/run-1/a.csv")
    assert not store.delete_file("old/run-1/a.csv")
    assert store.list_files("old") == ["old/run-2/b.csv"]
    with pytest.raises(DatastoreNotFoundError):
        resolve_input(store, "old/run-1")
