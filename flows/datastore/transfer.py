"""Moving whole inputs and outputs between a datastore and a local folder.

This is what AML's `download` and `upload` modes do for a job; the local
compute backend uses it so a step sees local paths whichever datastore is set.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from flows.datastore.base import Datastore, DatastoreNotFoundError, InputKind, join


def resolve_input(datastore: Datastore, path: str) -> tuple[InputKind, list[str]]:
    """Classify `path` as a file or a folder; return ("uri_file"|"uri_folder", files).

    Raises DatastoreNotFoundError naming the path and the datastore when it is
    neither.
    """
    if datastore.exists(path):
        return "uri_file", [path]
    files = datastore.list_files(path)
    if files:
        return "uri_folder", files
    raise DatastoreNotFoundError(
        f"input {path!r} does not exist in the {datastore.describe()}: "
        "give an existing file or a folder that holds files"
    )


def download(datastore: Datastore, path: str, dest: Path) -> Path:
    """Download a file or folder; return the local path that stands for `path`."""
    kind, files = resolve_input(datastore, path)
    if kind == "uri_file":
        local = dest / PurePosixPath(path).name
        datastore.download_file(path, local)
        return local
    for file in files:
        relative = PurePosixPath(file).relative_to(path)
        datastore.download_file(file, dest.joinpath(*relative.parts))
    return dest


def upload_folder(datastore: Datastore, src: Path, prefix: str) -> list[str]:
    """Upload every file below `src` to `prefix`, overwriting; return the paths written."""
    written = []
    for file in sorted(p for p in src.rglob("*") if p.is_file()):
        target = join(prefix, file.relative_to(src).as_posix())
        datastore.upload_file(file, target, overwrite=True)
        written.append(target)
    return written
