import json
import threading
from pathlib import Path

import pytest

from flows.datastore import DatastoreNotFoundError, LocalDatastore, PreconditionFailedError
from flows.datastore.base import DatastoreError
from flows.datastore.transfer import download, resolve_input, upload_folder


@pytest.fixture
def store(tmp_path: Path) -> LocalDatastore:
    return LocalDatastore(tmp_path / "root")


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_upload_download_round_trip(store: LocalDatastore, tmp_path: Path) -> None:
    store.upload_file(_file(tmp_path, "a.csv", "x,y\n1,2\n"), "raw/a.csv")
    assert store.exists("raw/a.csv")
    assert not store.exists("raw")
    store.download_file("raw/a.csv", tmp_path / "out" / "a.csv")
    assert (tmp_path / "out" / "a.csv").read_text() == "x,y\n1,2\n"


def test_upload_does_not_overwrite_unless_told(store: LocalDatastore, tmp_path: Path) -> None:
    src = _file(tmp_path, "a.csv", "1")
    store.upload_file(src, "a.csv")
    with pytest.raises(DatastoreError, match="already exists"):
        store.upload_file(src, "a.csv")
    store.upload_file(_file(tmp_path, "b.csv", "2"), "a.csv", overwrite=True)
    assert (store.root / "a.csv").read_text() == "2"


def test_missing_file_names_path_and_datastore(store: LocalDatastore, tmp_path: Path) -> None:
    with pytest.raises(DatastoreNotFoundError, match=r"'raw/nope.csv'.*local datastore"):
        store.download_file("raw/nope.csv", tmp_path / "x")


def test_paths_cannot_escape_the_root(store: LocalDatastore) -> None:
    with pytest.raises(DatastoreError, match="escapes"):
        store.exists("../outside")


def test_resolve_input_file_folder_and_missing(store: LocalDatastore, tmp_path: Path) -> None:
    store.upload_file(_file(tmp_path, "a.csv", "1"), "raw/a.csv")
    store.upload_file(_file(tmp_path, "b.csv", "2"), "raw/sub/b.csv")
    assert resolve_input(store, "raw/a.csv") == ("uri_file", ["raw/a.csv"])
    assert resolve_input(store, "raw") == ("uri_folder", ["raw/a.csv", "raw/sub/b.csv"])
    with pytest.raises(DatastoreNotFoundError, match=r"'raw/missing'.*does not exist"):
        resolve_input(store, "raw/missing")


def test_download_folder_keeps_relative_layout(store: LocalDatastore, tmp_path: Path) -> None:
    store.upload_file(_file(tmp_path, "a.csv", "1"), "raw/a.csv")
    store.upload_file(_file(tmp_path, "b.csv", "2"), "raw/sub/b.csv")
    local = download(store, "raw", tmp_path / "dl")
    assert (local / "sub" / "b.csv").read_text() == "2"
    assert download(store, "raw/a.csv", tmp_path / "one").name == "a.csv"


def test_upload_folder(store: LocalDatastore, tmp_path: Path) -> None:
    src = tmp_path / "out"
    (src / "nested").mkdir(parents=True)
    (src / "m.bin").write_bytes(b"m")
    (src / "nested" / "x.json").write_text("{}")
    written = upload_folder(store, src, "trained_models/r1")
    assert written == ["trained_models/r1/m.bin", "trained_models/r1/nested/x.json"]


def test_conditional_write_create_and_update(store: LocalDatastore) -> None:
    store.write_conditional("p/latest.json", '{"v": 1}', etag=None)
    with pytest.raises(PreconditionFailedError):
        store.write_conditional("p/latest.json", '{"v": 2}', etag=None)
    current = store.read_versioned("p/latest.json")
    assert current is not None
    store.write_conditional("p/latest.json", '{"v": 2}', etag=current.etag)
    with pytest.raises(PreconditionFailedError):
        store.write_conditional("p/latest.json", '{"v": 3}', etag=current.etag)
    assert json.loads(store.read_versioned("p/latest.json").text) == {"v": 2}  # type: ignore[union-attr]


def test_racing_conditional_writes_have_one_winner(store: LocalDatastore) -> None:
    store.write_conditional("latest.json", "0", etag=None)
    etag = store.read_versioned("latest.json").etag  # type: ignore[union-attr]
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            store.write_conditional("latest.json", str(i), etag=etag)
            wins.append(i)
        except PreconditionFailedError:
            pass

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.read_versioned("latest.json").text == str(wins[0])  # type: ignore[union-attr]


def test_list_skips_temp_and_lock_files(store: LocalDatastore) -> None:
    store.write_conditional("x/latest.json", "{}", etag=None)
    (store.root / "x" / ".tmp-partial").write_text("half")
    assert store.list_files("x") == ["x/latest.json"]
