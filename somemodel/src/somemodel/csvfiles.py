"""The CSV files the steps read: plain or gzip-compressed, told apart by their first bytes.

Data prep and scoring run from separate code folders, and both have the wheel:
what a file is, and which cells count as missing, is decided here once for both
(docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"

# The missing-value rule of training and scoring alike: only an empty cell. `NA`,
# `null`, `None`... are values (a class may be called `NA`).
MISSING_VALUES = ("",)

# Files that are not (plain or gzip) CSV text, by their first bytes: what to say
# instead of a UTF-8 decode error.
NOT_CSV = (
    (b"PK\x03\x04", "a zip archive (an Excel .xlsx workbook?): export or extract it as CSV"),
    (b"BZh", "bzip2-compressed: decompress it, or compress it with gzip instead"),
    (b"\xfd7zXZ", "xz-compressed: decompress it, or compress it with gzip instead"),
    (b"\xff\xfe", "UTF-16 text: save it as UTF-8 CSV"),
    (b"\xfe\xff", "UTF-16 text: save it as UTF-8 CSV"),
)


class NotCsvError(ValueError):
    """The file is not CSV text; the message says what it is and what to do with it."""


def is_gzip(path: Path) -> bool:
    """True for a gzip-compressed file (whatever its name); NotCsvError for another binary."""
    with Path(path).open("rb") as fh:
        head = fh.read(6)
    for magic, what in NOT_CSV:
        if head.startswith(magic):
            raise NotCsvError(f"the file is {what}")
    return head.startswith(GZIP_MAGIC)
