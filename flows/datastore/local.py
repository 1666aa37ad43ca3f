"""The local datastore: a folder with the container's relative paths."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from flows.datastore.base import (
    DatastoreError,
    DatastoreNotFoundError,
    PreconditionFailedError,
    Versioned,
    sha256_of_file,
)
from flows.fsutil import file_lock
from somemodel.artifacts import atomic_output


class LocalDatastore:
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def describe(self) -> str:
        return f"local datastore at {self.root}"

    def uri(self, path: str) -> str:
        return self._resolve(path).as_uri()

    def _resolve(self, path: str) -> Path:
        resolved = (self.root / path).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise DatastoreError(f"path {path!r} escapes the {self.describe()}")
        return resolved

    def exists(self, path: str) -> bool:
        return self._resolve(path).is_file()

    def list_files(self, prefix: str) -> list[str]:
        folder = self._resolve(prefix)
        if not folder.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def fingerprint(self, path: str) -> str:
        target = self._resolve(path)
        if not target.is_file():
            raise DatastoreNotFoundError(f"{path!r} does not exist in the {self.describe()}")
        return f"sha256:{sha256_of_file(target)}"

    def download_file(self, path: str, dest: Path) -> None:
        src = self._resolve(path)
        if not src.is_file():
            raise DatastoreNotFoundError(f"{path!r} does not exist in the {self.describe()}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)

    def upload_file(self, src: Path, path: str, *, overwrite: bool = False) -> None:
        target = self._resolve(path)
        if target.exists() and not overwrite:
            raise DatastoreError(f"{path!r} already exists in the {self.describe()}")
        # A copy within this machine: written to a temp file and renamed, so a reader
        # never sees half of it. (The blob datastore also checks what the service
        # stored; re-reading a local copy from the page cache would prove nothing.)
        with atomic_output(target) as tmp:
            shutil.copyfile(src, tmp)

    def delete_file(self, path: str) -> bool:
        target = self._resolve(path)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        # Folders left holding nothing visible (lock files at most) would read as
        # inputs that exist but hold nothing: remove them, up to the root.
        for parent in target.parents:
            if parent == self.root or any(not p.name.startswith(".") for p in parent.iterdir()):
                break
            shutil.rmtree(parent, ignore_errors=True)
        return True

    def read_versioned(self, path: str) -> Versioned | None:
        target = self._resolve(path)
        try:
            with target.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                data = handle.read()
        except FileNotFoundError:
            return None
        # Every write replaces the file (a new inode), so the tag changes with each
        # write, like a blob's ETag, even when the content is the same: a writer
        # holding the tag from before a same-content write must lose the race.
        digest = hashlib.sha256(data).hexdigest()
        etag = f"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{digest[:32]}"
        # surrogateescape: a file that is not UTF-8 still comes with its version tag, so the
        # caller can refuse it by name and replace it conditionally.
        return Versioned(text=data.decode("utf-8", "surrogateescape"), etag=etag)

    def write_conditional(self, path: str, text: str, *, etag: str | None) -> None:
        target = self._resolve(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(target.with_name(f".lock-{target.name}")):
            current = self.read_versioned(path)
            current_etag = current.etag if current else None
            if current_etag != etag:
                raise PreconditionFailedError(
                    f"{path!r} changed since it was read in the {self.describe()}"
                )
            with atomic_output(target) as tmp:
                tmp.write_text(text, encoding="utf-8")
