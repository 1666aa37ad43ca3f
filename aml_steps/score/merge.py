"""Join the parallel score job's part files into one predictions.csv + manifest.json.

The result is the plain score step's output, byte for byte in `predictions.csv`
and key for key in `manifest.json`: parts are appended in the plain step's
file order (sorted by path), each part's header dropped after the first. The
copy streams, so memory does not depend on the size of the parts.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from score import ScoreError

from somemodel.artifacts import (
    ArtifactError,
    PredictionsManifest,
    ScoredInput,
    atomic_output,
    begin_predictions,
)

PART_PREFIX = "part-"
_COPY_BUFFER = 8 << 20
_SHOWN = 5


@dataclass(frozen=True)
class Part:
    path: str
    rows: int
    csv: Path
    model_run_id: str
    model_sha256: str
    classes: tuple[Any, ...]
    header: bytes


def _read_part(meta: Path) -> Part:
    try:
        item = json.loads(meta.read_text(encoding="utf-8"))
        return Part(
            path=str(item["path"]),
            rows=int(item["rows"]),
            csv=meta.parent / str(item["part"]),
            model_run_id=str(item["model_run_id"]),
            model_sha256=str(item["model_sha256"]),
            classes=tuple(item["classes"]),
            header=str(item["header"]).encode("utf-8"),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ScoreError(
            f"{meta} is not a part description of the parallel score job: {exc}"
        ) from exc


def read_parts(parts_dir: Path, expected_files: int) -> list[Part]:
    """The finished parts in the plain step's file order, checked for one model and completeness."""
    if not parts_dir.is_dir():
        raise ScoreError(f"parts folder not found: {parts_dir}")
    parts = [_read_part(p) for p in sorted(parts_dir.glob(f"{PART_PREFIX}*.json"))]
    # The plain step sorts Paths, i.e. by path segments ("a/b.csv" before "a-b.csv").
    parts.sort(key=lambda part: PurePosixPath(part.path).parts)
    if len(parts) != expected_files:
        shown = ", ".join(repr(p.path) for p in parts[:_SHOWN])
        raise ScoreError(
            f"{parts_dir} holds {len(parts)} finished parts ({shown}{', ...' if parts else ''}) "
            f"for {expected_files} input CSVs: the parallel score job did not score every file"
        )
    if not parts:
        raise ScoreError(f"{parts_dir} holds no parts: nothing to merge")
    paths = [p.path for p in parts]
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise ScoreError(f"{parts_dir}: more than one part for {duplicates[:_SHOWN]}")
    first = parts[0]
    for part in parts[1:]:
        if (part.model_sha256, part.classes, part.header) != (
            first.model_sha256,
            first.classes,
            first.header,
        ):
            raise ScoreError(
                f"parts {first.path!r} and {part.path!r} were scored by different models "
                f"(sha256 {first.model_sha256} and {part.model_sha256})"
            )
    return parts


def merge_parts(
    parts_dir: Path, out_dir: Path, *, run_id: str, expected_files: int, created_at: datetime
) -> PredictionsManifest:
    """Write `out_dir/predictions.csv` from the parts; return the manifest to write last."""
    parts = read_parts(parts_dir, expected_files)
    header = parts[0].header
    with atomic_output(begin_predictions(out_dir)) as tmp, tmp.open("wb") as out:
        out.write(header)
        for part in parts:
            if not part.csv.is_file():
                raise ScoreError(f"{part.csv} (the part of {part.path!r}) is missing")
            with part.csv.open("rb") as source:
                if source.read(len(header)) != header:
                    raise ScoreError(
                        f"{part.csv} (the part of {part.path!r}) does not start with the "
                        "header its description names"
                    )
                shutil.copyfileobj(source, out, _COPY_BUFFER)
    try:
        return PredictionsManifest(
            run_id=run_id,
            model_run_id=parts[0].model_run_id,
            model_sha256=parts[0].model_sha256,
            inputs=tuple(ScoredInput(p.path, p.rows) for p in parts),
            output_rows=sum(p.rows for p in parts),
            classes=parts[0].classes,
            created_at=created_at.isoformat(),
        )
    except ArtifactError as exc:
        raise ScoreError(f"{parts_dir}: the parts do not make a valid manifest: {exc}") from exc
