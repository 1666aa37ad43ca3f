"""The datastore seam (the factory is flows/backends.py)."""

from __future__ import annotations

from flows.datastore.base import (
    Datastore,
    DatastoreError,
    DatastoreNotFoundError,
    PreconditionFailedError,
    Versioned,
)
from flows.datastore.local import LocalDatastore

__all__ = [
    "Datastore",
    "DatastoreError",
    "DatastoreNotFoundError",
    "LocalDatastore",
    "PreconditionFailedError",
    "Versioned",
]
