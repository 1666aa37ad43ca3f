"""Join the score shards' outputs into one predictions.csv + manifest.json.

Shard k scored a contiguous range of the folder's sorted CSVs (`shard_files`),
so appending the shards in order, each one's header dropped after the first,
gives the plain score step's `predictions.csv` byte for byte, and joining their
manifests gives its `manifest.json` key for key. The copy streams, so memory
does not depend on the size of the shards.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from outputs import MANIFEST_FILENAME, PREDICTIONS_FILENAME, ScoreError

_COPY_BUFFER = 8 << 20
_MANIFEST_KEYS = ("model_run_id", "model_sha256", "inputs", "output_rows", "classes")
_SHOWN = 5


@dataclass(frozen=True)
class Shard:
    folder: Path
    manifest: dict[str, Any]
    header: bytes

    @property
    def predictions(self) -> Path:
        return self.folder / PREDICTIONS_FILENAME


def _read_shard(index: int, folder: Path) -> Shard:
    manifest_path = folder / MANIFEST_FILENAME
    if not manifest_path.is_file():
        raise ScoreError(f"shard {index} ({folder}) has no {MANIFEST_FILENAME}: it did not finish")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ScoreError(f"{manifest_path} is not valid JSON: {exc}") from exc
    missing = [key for key in _MANIFEST_KEYS if key not in manifest]
    if missing:
        raise ScoreError(f"{manifest_path} lacks keys {missing}")
    predictions = folder / PREDICTIONS_FILENAME
    if not predictions.is_file():
        raise ScoreError(f"shard {index} ({folder}) has a manifest but no {PREDICTIONS_FILENAME}")
    with predictions.open("rb") as handle:
        header = handle.readline()
    return Shard(folder, manifest, header)


def read_shards(shard_dirs: list[Path], expected_files: int) -> list[Shard]:
    """The finished shards, checked for one model, one header and every input file once."""
    if not shard_dirs:
        raise ScoreError("no shards given: nothing to merge")
    shards = [_read_shard(k, folder) for k, folder in enumerate(shard_dirs)]
    first = shards[0]
    for k, shard in enumerate(shards[1:], start=1):
        if (shard.manifest["model_sha256"], shard.manifest["classes"], shard.header) != (
            first.manifest["model_sha256"],
            first.manifest["classes"],
            first.header,
        ):
            raise ScoreError(
                f"shards 0 and {k} were scored by different models (sha256 "
                f"{first.manifest['model_sha256']} and {shard.manifest['model_sha256']})"
            )
    paths = [str(item["path"]) for shard in shards for item in shard.manifest["inputs"]]
    if len(paths) != expected_files:
        shown = ", ".join(repr(p) for p in paths[:_SHOWN])
        raise ScoreError(
            f"the {len(shards)} shards scored {len(paths)} CSVs ({shown}{', ...' if paths else ''})"
            f" for {expected_files} input CSVs: a shard missed files"
        )
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise ScoreError(f"more than one shard scored {duplicates[:_SHOWN]}")
    return shards


def merge_shards(
    shard_dirs: list[Path], out_dir: Path, *, run_id: str, expected_files: int, created_at: datetime
) -> dict[str, Any]:
    """Write `out_dir/predictions.csv` from the shards (in order); return the manifest to write."""
    shards = read_shards(shard_dirs, expected_files)
    header = shards[0].header
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILENAME).unlink(missing_ok=True)
    target = out_dir / PREDICTIONS_FILENAME
    tmp = out_dir / f".{PREDICTIONS_FILENAME}.{os.getpid()}.tmp"
    try:
        with tmp.open("wb") as out:
            out.write(header)
            for shard in shards:
                with shard.predictions.open("rb") as source:
                    source.readline()  # its header, checked equal to the first's
                    shutil.copyfileobj(source, out, _COPY_BUFFER)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    first = shards[0].manifest
    inputs = [
        {"path": item["path"], "rows": int(item["rows"])}
        for shard in shards
        for item in shard.manifest["inputs"]
    ]
    return {
        "run_id": run_id,
        "model_run_id": first["model_run_id"],
        "model_sha256": first["model_sha256"],
        "inputs": inputs,
        "output_rows": sum(int(shard.manifest["output_rows"]) for shard in shards),
        "classes": list(first["classes"]),
        "created_at": created_at.isoformat(),
    }
