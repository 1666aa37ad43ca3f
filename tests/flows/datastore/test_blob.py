"""The blob datastore against a real Azurite: what the contract tests cannot say."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import tracemalloc
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient, ContainerSasPermissions, generate_container_sas

from flows.backends import make_datastore
from flows.datastore import DatastoreError, DatastoreNotFoundError
from flows.datastore.base import sha256_of_file
from flows.datastore.blob import BlobDatastore
from flows.settings import Settings
from tests.services import ACCOUNT_KEY, ACCOUNT_NAME, WRONG_KEY, Azurite, blob_datastore

pytestmark = pytest.mark.integration

MB = 1024 * 1024


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _raw(azurite: Azurite, container: str) -> ContainerClient:
    return ContainerClient.from_connection_string(azurite.connection_string, container)


def test_settings_select_the_blob_datastore(azurite: Azurite) -> None:
    store = make_datastore(
        Settings(
            datastore="blob",
            blob_container="somemodel",
            blob_connection_string=azurite.connection_string,
        )
    )
    assert isinstance(store, BlobDatastore)
    assert store.kind == "blob"
    assert store.describe() == "blob container 'somemodel' in storage account 'devstoreaccount1'"


def test_account_url_settings_build_an_identity_based_client_offline() -> None:
    store = make_datastore(
        Settings(datastore="blob", blob_account_url="https://acct.blob.core.windows.net")
    )
    assert store.describe() == "blob container 'somemodel' in storage account 'acct'"
    assert store.uri("raw/a.csv") == "https://acct.blob.core.windows.net/somemodel/raw/a.csv"
    assert "Storage Blob Data Contributor" in store.credential_hint  # type: ignore[attr-defined]


def test_uri_is_the_blob_url_without_secrets(blob_store: BlobDatastore, azurite: Azurite) -> None:
    assert blob_store.uri("raw/week 1/a.csv") == (
        f"{azurite.blob_endpoint}/{blob_store.container}/raw/week%201/a.csv"
    )


def test_sas_connection_string_works_and_the_token_stays_out_of_uris(
    blob_store: BlobDatastore, azurite: Azurite, tmp_path: Path
) -> None:
    sas = generate_container_sas(
        ACCOUNT_NAME,
        blob_store.container,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True, write=True, list=True),
        expiry=time.time() + 600,
    )
    store = BlobDatastore.from_settings(
        Settings(
            datastore="blob",
            blob_container=blob_store.container,
            blob_connection_string=(
                f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={sas}"
            ),
        )
    )
    store.upload_file(_file(tmp_path, "a.csv", b"1,2\n"), "raw/a.csv")
    assert blob_store.exists("raw/a.csv")
    assert "sig=" not in store.uri("raw/a.csv")
    assert sas not in store.describe()


def test_upload_records_md5_and_sha256(blob_store: BlobDatastore, tmp_path: Path) -> None:
    src = _file(tmp_path, "m.bin", os.urandom(3 * MB))
    blob_store.upload_file(src, "models/m.bin")
    properties = _raw_from(blob_store).get_blob_client("models/m.bin").get_blob_properties()
    assert properties.metadata["sha256"] == sha256_of_file(src)
    assert (
        bytes(properties.content_settings.content_md5)
        == hashlib.md5(src.read_bytes(), usedforsecurity=False).digest()
    )


def _raw_from(store: BlobDatastore) -> ContainerClient:
    return store._client


def test_corrupted_blob_is_refused_on_download(blob_store: BlobDatastore, tmp_path: Path) -> None:
    src = _file(tmp_path, "m.bin", b"the real model")
    blob_store.upload_file(src, "models/m.bin")
    blob = _raw_from(blob_store).get_blob_client("models/m.bin")
    # Another writer swaps the bytes but leaves the recorded hash.
    blob.upload_blob(b"a swapped model", overwrite=True, metadata={"sha256": sha256_of_file(src)})
    with pytest.raises(DatastoreError, match="does not match the hash"):
        blob_store.download_file("models/m.bin", tmp_path / "out" / "m.bin")
    assert not (tmp_path / "out" / "m.bin").exists()


def test_blob_from_another_tool_fingerprints_by_md5(
    blob_store: BlobDatastore, tmp_path: Path
) -> None:
    _raw_from(blob_store).get_blob_client("raw/x.csv").upload_blob(b"a,b\n")
    digest = hashlib.md5(b"a,b\n", usedforsecurity=False).hexdigest()
    assert blob_store.fingerprint("raw/x.csv") == f"md5:{digest}"
    blob_store.download_file("raw/x.csv", tmp_path / "x.csv")
    assert (tmp_path / "x.csv").read_bytes() == b"a,b\n"


def test_create_container_is_idempotent(azurite: Azurite) -> None:
    store = blob_datastore(azurite, azurite.new_container_name())
    assert store.create_container() is True
    assert store.create_container() is False


def test_missing_container_is_named_with_the_fix(azurite: Azurite, tmp_path: Path) -> None:
    store = blob_datastore(azurite, "no-such-container")
    src = _file(tmp_path, "a.csv", b"1")
    calls = [
        lambda: store.exists("raw/a.csv"),
        lambda: store.list_files("raw"),
        lambda: store.download_file("raw/a.csv", tmp_path / "a"),
        lambda: store.upload_file(src, "raw/a.csv"),
        lambda: store.read_versioned("latest.json"),
        lambda: store.write_conditional("latest.json", "{}", etag=None),
        lambda: store.fingerprint("raw/a.csv"),
    ]
    for call in calls:
        with pytest.raises(
            DatastoreNotFoundError, match=r"'no-such-container'.*does not exist"
        ) as info:
            call()
        assert "--create-container" in str(info.value)


def test_wrong_key_says_which_setting_and_leaks_nothing(
    azurite: Azurite,
    blob_store: BlobDatastore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    # The real retry policy: a 403 is permanent, so it must fail at once.
    store = BlobDatastore.from_settings(
        Settings(
            datastore="blob",
            blob_container=blob_store.container,
            blob_connection_string=azurite.connection_string_with_key(WRONG_KEY),
        )
    )
    messages = []
    started = time.monotonic()
    for call in (
        lambda: store.exists("raw/a.csv"),
        lambda: store.list_files("raw"),
        lambda: store.upload_file(_file(tmp_path, "a.csv", b"1"), "raw/a.csv", overwrite=True),
        lambda: store.read_versioned("latest.json"),
    ):
        with pytest.raises(DatastoreError, match="SOMEMODEL_BLOB_CONNECTION_STRING") as info:
            call()
        assert "not authorised" in str(info.value)
        messages.append(str(info.value))
    assert time.monotonic() - started < 5, "a permanent 403 was retried"
    captured = capsys.readouterr()
    everything = "\n".join([*messages, caplog.text, captured.out, captured.err])
    assert caplog.records, "nothing was logged: the scan would prove nothing"
    for secret in (WRONG_KEY, ACCOUNT_KEY, WRONG_KEY[:20], ACCOUNT_KEY[:20], "AccountKey="):
        assert secret not in everything


def test_malformed_connection_string_is_reported_without_it(azurite: Azurite) -> None:
    secret = "AccountKey=" + WRONG_KEY
    with pytest.raises(DatastoreError, match="connection string is malformed") as info:
        BlobDatastore.from_settings(
            Settings(datastore="blob", blob_connection_string=f"nonsense;{secret}")
        )
    assert WRONG_KEY not in str(info.value)


def test_unreachable_endpoint_fails_clearly_and_recovers(tmp_path: Path) -> None:
    own = Azurite(tmp_path / "azurite")
    own.start()
    try:
        store = blob_datastore(own, "recovers")
        store.create_container()
        store.upload_file(_file(tmp_path, "a.csv", b"1"), "raw/a.csv")
        own.stop()
        with pytest.raises(DatastoreError, match=r"could not reach.*'recovers'"):
            store.exists("raw/a.csv")
        own.start()
        assert store.exists("raw/a.csv")
    finally:
        own.stop()


@pytest.mark.slow
def test_50mb_file_is_streamed_both_ways(blob_store: BlobDatastore, tmp_path: Path) -> None:
    size = 50 * MB
    src = tmp_path / "big.csv"
    with src.open("wb") as out:
        for _ in range(size // MB):
            out.write(os.urandom(MB))
    expected = sha256_of_file(src)
    tracemalloc.start()
    try:
        blob_store.upload_file(src, "raw/big.csv")
        upload_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        blob_store.download_file("raw/big.csv", tmp_path / "dl" / "big.csv")
        download_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sha256_of_file(tmp_path / "dl" / "big.csv") == expected
    assert upload_peak < size * 0.45, f"upload peaked at {upload_peak / MB:.1f} MB"
    assert download_peak < size * 0.45, f"download peaked at {download_peak / MB:.1f} MB"
