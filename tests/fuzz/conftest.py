"""Put each step folder on sys.path, the way AML runs it (the step folder is the cwd)."""

from __future__ import annotations

import sys
from pathlib import Path

STEPS_DIR = Path(__file__).resolve().parents[2] / "aml_steps"
for _step in ("data_prep", "train", "score"):
    _path = str(STEPS_DIR / _step)
    if _path not in sys.path:
        sys.path.insert(0, _path)
