"""The datastore seam: a flat namespace of files addressed by relative POSIX paths.

Two implementations keep the same layout (`LocalDatastore`, a folder;
`BlobDatastore`, an Azure Blob container), so a path such as
`trained_models/{run_id}/metadata.json` means the same thing on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

# One sha256 for the whole project: the one the steps check models with.
from somemodel.artifacts import sha256_of_file as sha256_of_file
from somemodel.artifacts import sha256_of_stream as sha256_of_stream

CHUNK_SIZE = 4 * 1024 * 1024

# How a job sees a datastore path: one file, or a folder of files (AML's names).
InputKind = Literal["uri_file", "uri_folder"]


class DatastoreError(RuntimeError):
    """A datastore operation failed; the message names the path and the datastore."""


class DatastoreNotFoundError(DatastoreError):
    """The path (or the container) does not exist."""


class PreconditionFailedError(DatastoreError):
    """A conditional write lost a race: the file changed since it was read."""


@dataclass(frozen=True)
class Versioned:
    """A small file's text with the version tag (ETag) to make a conditional write."""

    text: str
    etag: str


class Datastore(Protocol):
    kind: str

    def describe(self) -> str:
        """Where this datastore lives, for messages (never a secret)."""
        ...

    def uri(self, path: str) -> str:
        """A URI a person can use to find `path` (file:// or https://)."""
        ...

    def exists(self, path: str) -> bool:
        """True when `path` is a file (not a folder/prefix)."""
        ...

    def list_files(self, prefix: str) -> list[str]:
        """All file paths below the folder `prefix`, sorted."""
        ...

    def fingerprint(self, path: str) -> str:
        """A content fingerprint of the file at `path` (a content hash, or the blob's MD5)."""
        ...

    def download_file(self, path: str, dest: Path) -> None:
        """Stream `path` into the local file `dest` (parents created)."""
        ...

    def upload_file(self, src: Path, path: str, *, overwrite: bool = False) -> None:
        """Stream the local file `src` to `path`, verifying its content hash."""
        ...

    def read_versioned(self, path: str) -> Versioned | None:
        """A small text file and its version tag, or None when it does not exist."""
        ...

    def delete_file(self, path: str) -> bool:
        """Delete the file at `path`; False when it did not exist (retention, flows/cleanup.py)."""
        ...

    def write_conditional(self, path: str, text: str, *, etag: str | None) -> None:
        """Write `text` to `path` only if its version is still `etag` (None: only if absent).

        Raises PreconditionFailedError when another writer got there first.
        """
        ...


def join(*parts: str) -> str:
    """Datastore path parts joined with single `/`; empty parts and outer slashes dropped."""
    return "/".join(part.strip("/") for part in parts if part.strip("/"))
