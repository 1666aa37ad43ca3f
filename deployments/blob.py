"""Set up the blob datastore from settings: the container and the credentials block.

    python -m deployments.blob --create-container [--save-block NAME]
    python -m deployments.blob --upload data/sample/iris.csv raw/iris.csv

Both are idempotent: an existing container is left as it is, and saving the
block again overwrites it with the current settings. The block is prefect-azure's
`AzureBlobStorageCredentials` (its connection string stays a `SecretStr`);
afterwards `SOMEMODEL_BLOB_CREDENTIALS_BLOCK=NAME` is enough to find the container.
`--upload` puts a local file at a path in the container (streamed, hash-checked),
for trying the flows without other tools; it does not overwrite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from flows.datastore.base import DatastoreError
from flows.datastore.blob import BlobDatastore, credentials_from_settings
from flows.paths import InvalidPathError, check_datastore_path
from flows.settings import Settings


class BlobSetupError(RuntimeError):
    """The requested set-up cannot be done with these settings; the message says why."""


def create_container(settings: Settings) -> str:
    store = BlobDatastore.from_settings(settings)
    created = store.create_container()
    return f"{'Created' if created else 'Already there'}: the {store.describe()}"


def save_block(settings: Settings, name: str) -> str:
    if settings.blob_credentials_block and not (
        settings.blob_connection_string or settings.blob_account_url
    ):
        raise BlobSetupError(
            "--save-block needs SOMEMODEL_BLOB_CONNECTION_STRING or SOMEMODEL_BLOB_ACCOUNT_URL: "
            "the block is built from them (SOMEMODEL_BLOB_CREDENTIALS_BLOCK only names a saved one)"
        )
    # Build from the raw credentials, not from an already-saved block.
    credentials, _ = credentials_from_settings(
        settings.model_copy(update={"blob_credentials_block": None})
    )
    credentials.save(name, overwrite=True)
    how = "connection string" if credentials.connection_string else "account URL"
    return (
        f"Saved the AzureBlobStorageCredentials block {name!r} ({how}); "
        f"set SOMEMODEL_BLOB_CREDENTIALS_BLOCK={name} to use it"
    )


def upload(settings: Settings, local: Path, path: str) -> str:
    if not local.is_file():
        raise BlobSetupError(f"{local} is not a file")
    store = BlobDatastore.from_settings(settings)
    store.upload_file(local, check_datastore_path(path))
    return f"Uploaded {local} to {store.uri(path)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--create-container",
        action="store_true",
        help="create SOMEMODEL_BLOB_CONTAINER if it does not exist",
    )
    parser.add_argument(
        "--save-block",
        metavar="NAME",
        help="save the credentials from settings as an AzureBlobStorageCredentials block",
    )
    parser.add_argument(
        "--upload",
        nargs=2,
        metavar=("LOCAL_FILE", "PATH"),
        help="upload a local file to PATH in the container (after creating it, if asked)",
    )
    args = parser.parse_args(argv)
    if not (args.create_container or args.save_block or args.upload):
        parser.error("nothing to do: give --create-container, --save-block NAME or --upload")
    try:
        settings = Settings()
        if not (
            settings.blob_connection_string
            or settings.blob_account_url
            or settings.blob_credentials_block
        ):
            raise BlobSetupError(
                "set SOMEMODEL_BLOB_CONNECTION_STRING (Azurite or an account key) or "
                "SOMEMODEL_BLOB_ACCOUNT_URL (DefaultAzureCredential) in the environment or .env"
            )
        if args.save_block:
            print(save_block(settings, args.save_block))
        if args.create_container:
            print(create_container(settings))
        if args.upload:
            print(upload(settings, Path(args.upload[0]), args.upload[1]))
    except (BlobSetupError, DatastoreError, InvalidPathError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
