"""Datastores to run the contract against: a temp folder and a fresh Azurite container."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.datastore import Datastore, LocalDatastore
from flows.datastore.blob import BlobDatastore
from tests.services import Azurite, blob_datastore


@pytest.fixture
def blob_store(azurite: Azurite) -> BlobDatastore:
    store = blob_datastore(azurite, azurite.new_container_name())
    store.create_container()
    return store


@pytest.fixture(params=["local", pytest.param("blob", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Datastore:
    if request.param == "local":
        return LocalDatastore(tmp_path / "root")
    return request.getfixturevalue("blob_store")
