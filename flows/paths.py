"""Names that reach storage: datastore paths, run ids, column names.

`input_path` comes from a public API (`prefect deployment run --param`), so it
is checked before anything touches storage: a relative POSIX path inside the
datastore, nothing that could escape it or be read as a URL. The same
`Annotated` types are the flows' parameter hints, so Prefect rejects a bad
value when the run is created, before any task runs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field, WithJsonSchema

MAX_PATH_LENGTH = 1024
# File systems (ext4, NTFS, APFS) and the local datastore cap a file or folder name.
MAX_SEGMENT_BYTES = 255
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ =+-]*$")
_RUN_ID = re.compile(r"^[a-z][a-z0-9-]{2,62}$")
_COLUMN = re.compile(r"^[^\x00-\x1f]{1,256}$")


class InvalidPathError(ValueError):
    """A datastore path is unsafe or malformed; the message says why."""


def _shorten(text: str, limit: int = 80) -> str:
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def check_datastore_path(path: str) -> str:
    """Return `path` normalised (no trailing slash) or raise InvalidPathError."""
    shown = _shorten(path)
    if not path or not path.strip("/"):
        raise InvalidPathError("path is empty: give a file or folder inside the datastore")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidPathError(f"path {shown} is longer than {MAX_PATH_LENGTH} characters")
    if "\x00" in path or any(ord(c) < 32 for c in path):
        raise InvalidPathError(f"path {shown} contains control characters")
    if "://" in path or path.startswith(("azureml:", "http:", "https:", "file:")):
        raise InvalidPathError(
            f"path {shown} looks like a URL: give a path relative to the datastore, "
            "e.g. raw/2026-11-23.csv"
        )
    if path.startswith("/") or "\\" in path or re.match(r"^[A-Za-z]:", path):
        raise InvalidPathError(
            f"path {shown} is absolute: give a path relative to the datastore, "
            "e.g. raw/2026-11-23.csv"
        )
    segments = path.rstrip("/").split("/")
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidPathError(
                f"path {shown} has an empty, '.' or '..' segment: paths may not leave the datastore"
            )
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise InvalidPathError(
                f"path {shown}: segment {_shorten(segment)} is {len(segment.encode())} bytes "
                f"long; a file or folder name may be at most {MAX_SEGMENT_BYTES} bytes: "
                "shorten it"
            )
        if not _SEGMENT.match(segment):
            raise InvalidPathError(
                f"path {shown}: segment {_shorten(segment)} may only contain letters, digits, "
                "'.', '_', '-', '=', '+' and spaces, and must start with a letter or digit"
            )
    return "/".join(segments)


def check_run_id(run_id: str) -> str:
    """`run_id` unchanged if it can name blobs and Azure ML jobs; InvalidPathError otherwise."""
    if not _RUN_ID.match(run_id):
        raise InvalidPathError(
            f"run id {run_id[:80]!r} must be 3-63 characters of lower-case letters, digits "
            "and '-', starting with a letter (it names blobs and Azure ML jobs)"
        )
    return run_id


def check_column_name(name: str) -> str:
    """`name` unchanged if it is 1-256 characters without control characters; InvalidPathError
    otherwise.
    """
    if not _COLUMN.match(name):
        raise InvalidPathError(
            f"column name {name[:80]!r} must be 1-256 characters without control characters"
        )
    return name


# The validators run in the flow process; the JSON schemas below are what the
# Prefect server checks when a run is created (deployments enforce their
# parameter schema), so a bad value from the API or the UI is refused before a
# run even exists. The patterns accept exactly what the validators accept.
DATASTORE_PATH_PATTERN = (
    r"^[A-Za-z0-9][A-Za-z0-9._ =+-]{0,254}(/[A-Za-z0-9][A-Za-z0-9._ =+-]{0,254})*/*$"
)
MODEL_LATEST = "latest"

# What the server answers with, in words. It has no custom messages: its 409
# carries the failing JSON-schema keyword's own text, which for `pattern` is
# "'../etc' does not match '<the pattern>'" (a regular expression, which the
# UI's markdown toast mangles). So each rule below is written as a pattern too:
# plain words that compile as a regular expression, used only to refuse.
PATH_RULE = (
    "a path inside the datastore such as raw/2026-11-23.csv: no '..', no absolute path, "
    "no URL; names of letters, digits, spaces and . _ - = + separated by single slashes"
)
RUN_ID_RULE = (
    "a run id such as train-2026-11-23-1a2b3c4d: 3 to 63 lower-case letters, digits and "
    "hyphens, starting with a letter"
)
MODEL_RULE = "latest, or the run id of a training run such as train-2026-11-23-1a2b3c4d"
COLUMN_RULE = "a column name: 1 to 256 characters, no control characters"


def refusal_schema(accepted: dict[str, Any], rule: str) -> dict[str, Any]:
    """A string schema that accepts what `accepted` accepts and refuses the rest with `rule`.

    The check runs in `if`, which reports nothing; a refused value meets
    `else`, where `pattern: rule` fails with the rule as the message and
    `not` refuses the (odd) value that would contain the rule's words. The
    server then answers "Validation failed for field 'input_path'. Failure
    reason: '../etc' does not match \"a path inside the datastore ...\"".
    The `type` in `else` makes jsonschema's error ranking pick this message
    over "not of type 'null'" when the parameter is optional (`RunId | None`).
    """
    refuse = {"type": "string", "pattern": rule, "not": {"pattern": rule}}
    return {"type": "string", "if": accepted, "else": refuse}


def check_model_selector(value: str) -> str:
    """`latest`, or a training run id (validated like every run id)."""
    return value if value == MODEL_LATEST else check_run_id(value)


DatastorePath = Annotated[
    str,
    AfterValidator(check_datastore_path),
    WithJsonSchema(
        refusal_schema({"pattern": DATASTORE_PATH_PATTERN, "maxLength": MAX_PATH_LENGTH}, PATH_RULE)
    ),
]
RunId = Annotated[
    str,
    AfterValidator(check_run_id),
    WithJsonSchema(refusal_schema({"pattern": _RUN_ID.pattern}, RUN_ID_RULE)),
]
# `latest` is a valid run id too, so the one pattern accepts both.
ModelSelector = Annotated[
    str,
    AfterValidator(check_model_selector),
    WithJsonSchema(refusal_schema({"pattern": _RUN_ID.pattern}, MODEL_RULE)),
]
ColumnName = Annotated[
    str,
    AfterValidator(check_column_name),
    WithJsonSchema(refusal_schema({"pattern": _COLUMN.pattern}, COLUMN_RULE)),
]
# Cleanup's retention age: a negative age would delete this week's data too.
RetentionDays = Annotated[float, Field(ge=0)]


def make_run_id(prefix: str, flow_run_id: str, now: datetime | None = None) -> str:
    """A readable, unique id: `train-2026-11-23-1a2b3c4d` (date + flow-run id prefix)."""
    day = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
    short = re.sub(r"[^a-z0-9]", "", flow_run_id.lower())[:8]
    return check_run_id(f"{prefix}-{day}-{short}")
