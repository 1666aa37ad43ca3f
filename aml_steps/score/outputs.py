"""How the score and merge steps fail: one error type, shared by both CLIs.

The file names and formats they write are the artifact contract's
(`somemodel.artifacts`); this module only holds what is the steps' own.
"""

from __future__ import annotations


class ScoreError(ValueError):
    """The model or the input data cannot be scored; the message says what to fix."""
