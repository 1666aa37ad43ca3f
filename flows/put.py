"""Put a local file into the datastore, local folder or blob container alike.

    python -m flows.put LOCAL_FILE DATASTORE_PATH [--overwrite]
    python -m flows.put data/sample/iris.csv raw/train/2026-11-23.csv

DATASTORE_PATH is relative to the datastore (the folder `.datastore/`, or the
container with SOMEMODEL_DATASTORE=blob), as the flows' `input_path` is. The
upload is streamed and hash-checked; an existing file is kept unless
`--overwrite` (a replaced scoring file counts as new: it is scored again).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from flows.backends import make_datastore
from flows.datastore.base import DatastoreError
from flows.paths import InvalidPathError, check_datastore_path
from flows.settings import Settings, SettingsError


class PutError(ValueError):
    """The local file cannot be put where asked; the message says what to fix."""


def put(settings: Settings, local: Path, path: str, *, overwrite: bool = False) -> str:
    """Upload `local` to `path`; return where it went, as a URI."""
    if not local.is_file():
        raise PutError(f"{local} is not a file on this machine: give the path of a local file")
    datastore = make_datastore(settings)
    target = check_datastore_path(path)
    datastore.upload_file(local, target, overwrite=overwrite)
    return datastore.uri(target)


def main(argv: list[str] | None = None) -> int:
    """The `python -m flows.put` command line: exit code 1 with one line on stderr when the
    file, the path or the settings are wrong.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("local_file", type=Path, help="the file on this machine")
    parser.add_argument("path", help="where it goes, relative to the datastore (raw/score/x.csv)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    try:
        uri = put(Settings(), args.local_file, args.path, overwrite=args.overwrite)
    except (PutError, DatastoreError, InvalidPathError, SettingsError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Put {args.local_file} at {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
