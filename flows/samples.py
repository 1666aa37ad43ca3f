"""The bundled sample data, put into the datastore for a first local run."""

from __future__ import annotations

from pathlib import Path

from flows.backends import make_datastore
from flows.settings import REPO_ROOT, Settings

SAMPLES_DIR = REPO_ROOT / "data" / "sample"


def seed(settings: Settings, source: Path, path: str) -> None:
    """Upload the bundled `source` to `path` in the datastore, unless it is there already."""
    datastore = make_datastore(settings)
    if not datastore.exists(path):
        datastore.upload_file(source, path)
        print(f"Seeded the sample data at {datastore.uri(path)}")
