"""The datastore seam and its factory."""

from __future__ import annotations

from flows.datastore.base import (
    Datastore,
    DatastoreError,
    DatastoreNotFoundError,
    PreconditionFailedError,
    Versioned,
)
from flows.datastore.local import LocalDatastore
from flows.settings import Settings

__all__ = [
    "Datastore",
    "DatastoreError",
    "DatastoreNotFoundError",
    "LocalDatastore",
    "PreconditionFailedError",
    "Versioned",
    "make_datastore",
]


def make_datastore(settings: Settings) -> Datastore:
    if settings.datastore == "blob":
        from flows.datastore.blob import BlobDatastore

        return BlobDatastore.from_settings(settings)
    return LocalDatastore(settings.local_datastore_root)
