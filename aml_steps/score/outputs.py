"""What the score and merge steps write, and how they fail: no pandas, no model.

The merge step imports only this (and the standard library), so it starts in
a fraction of the time of the score step, which needs pandas, Arrow and
scikit-learn.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

PREDICTIONS_FILENAME = "predictions.csv"
MANIFEST_FILENAME = "manifest.json"


class ScoreError(ValueError):
    """The model or the input data cannot be scored; the message says what to fix."""


def write_manifest(manifest: dict[str, Any], out_dir: Path) -> Path:
    """Write ``manifest.json`` atomically; call this last, it marks the output complete."""
    target = out_dir / MANIFEST_FILENAME
    tmp = out_dir / f".{MANIFEST_FILENAME}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
