"""Turn raw training CSVs into a clean, numeric feature table plus its target column.

Pure functions only, apart from the two small readers/writers at the bottom; the
CLI in ``run_data_prep.py`` wires them to the command line.
"""

from __future__ import annotations

import csv
import gzip
import logging
import re
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from somemodel.artifacts import atomic_output
from somemodel.csvfiles import MISSING_VALUES, NotCsvError, is_gzip

logger = logging.getLogger(__name__)

PREPARED_FILENAME = "prepared.parquet"
DEFAULT_MAX_DROPPED_SHARE = 0.5
_EXAMPLES = 3
_SHOWN_COLUMNS = 10
# A feature that counts 0, 1, 2... over at least this many rows is an exported index.
_ROW_NUMBER_MIN_ROWS = 50
_MISSING = list(MISSING_VALUES)  # somemodel.csvfiles: only an empty cell
# Text a feature cell may hold that is a number, but not a finite one.
_NAN_TEXT = frozenset(["nan", "+nan", "-nan"])
# A header cell pandas writes for an unnamed index, or reads back from an empty one.
_UNNAMED = re.compile(r"^Unnamed: \d+$")


class DataPrepError(ValueError):
    """The input data cannot be prepared; the message says what to fix."""


def list_csv_files(path: Path, shown: str = "") -> list[Path]:
    """``path`` itself when it is a file, else every ``*.csv``/``*.csv.gz`` below it, sorted.

    ``shown`` is how messages name ``path`` (the user's datastore path), by default itself.
    """
    shown = shown or str(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataPrepError(f"input path does not exist: {shown}")
    files = sorted(
        p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith((".csv", ".csv.gz"))
    )
    if not files:
        found = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        raise DataPrepError(
            f"no CSV files found in folder {shown} (found {_shown(found)}): give a CSV file "
            "or a folder of *.csv or *.csv.gz files"
        )
    return files


def source_names(files: list[Path], root: Path, shown_root: str = "") -> list[str]:
    """How messages name each file: the path the user gave, not the step's local copy.

    ``root`` is the step's input (a file or a folder), ``shown_root`` what the user
    called it (the datastore path); files are named relative to it.
    """
    shown_root = shown_root.rstrip("/")
    names = []
    for path in files:
        if path == root:
            names.append(shown_root or path.name)
            continue
        relative = path.relative_to(root).as_posix()
        names.append(f"{shown_root}/{relative}" if shown_root else relative)
    return names


def _is_gzip(path: Path, name: str) -> bool:
    """True for a gzip-compressed file (whatever its name); DataPrepError for other binaries."""
    try:
        return is_gzip(path)
    except NotCsvError as exc:
        raise DataPrepError(f"{name}: {exc}") from exc


def _read_header(path: Path, name: str, gzipped: bool) -> list[str]:
    # pandas silently renames duplicate headers ("a", "a.1"), so read the raw line.
    # utf-8-sig: a byte-order mark is not part of the first column's name.
    opener = gzip.open if gzipped else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
            header = next(csv.reader(fh), None)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataPrepError(f"{name}: cannot read the CSV header: {exc}") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise DataPrepError(f"{name}: gzip-compressed but cannot be decompressed: {exc}") from exc
    if not header:
        raise DataPrepError(f"{name}: file is empty (no header, no rows)")
    return header


def _unnamed_positions(header: list[str]) -> list[int]:
    return [i for i, column in enumerate(header) if not column.strip() or _UNNAMED.match(column)]


def _duplicates(names: list[str]) -> list[str]:
    return sorted(name for name, count in Counter(names).items() if count > 1)


def _read_csv(path: Path, name: str, target_col: str, gzipped: bool) -> pd.DataFrame:
    # index_col=False: rows with one field more than the header would otherwise make
    # pandas take the first column as the index and shift every value one column left.
    # pandas only warns that it drops the extra fields, so the warning is made an error.
    # Labels are read as text, so "001" stays "001"; only an empty cell is missing.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                path,
                index_col=False,
                dtype={target_col: str},
                keep_default_na=False,
                na_values=_MISSING,
                compression="gzip" if gzipped else None,
                encoding="utf-8",
            )
    except pd.errors.ParserWarning as exc:
        raise DataPrepError(
            f"{name}: some rows have more fields than the header: check for unquoted commas"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataPrepError(f"{name}: file is empty (no header, no rows)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        message = str(exc).strip().replace("\n", " ")
        raise DataPrepError(f"{name}: cannot parse CSV: {message}") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise DataPrepError(f"{name}: gzip-compressed but cannot be decompressed: {exc}") from exc


def read_csvs(
    paths: list[Path], target_col: str = "target", names: list[str] | None = None
) -> pd.DataFrame:
    """Read and stack CSV files (plain or gzip-compressed) that must all have the same header.

    ``names`` are how messages name the files (default: their paths). Unnamed columns
    (an empty header cell, or pandas' ``Unnamed: 0``) are dropped with a warning: they
    are almost always the row index pandas writes unless ``to_csv(index=False)``.
    """
    if not paths:
        raise DataPrepError("no CSV files to read")
    names = names or [str(path) for path in paths]
    frames: list[pd.DataFrame] = []
    expected: list[str] | None = None
    for path, name in zip(paths, names, strict=True):
        gzipped = _is_gzip(path, name)
        header = _read_header(path, name, gzipped)
        unnamed = _unnamed_positions(header)
        skipped = set(unnamed)
        named = [column for i, column in enumerate(header) if i not in skipped]
        duplicated = _duplicates(named)
        if duplicated:
            raise DataPrepError(f"{name}: duplicate column names {_shown(duplicated)}")
        if expected is None:
            expected = header
        elif header != expected:
            raise DataPrepError(f"{name}: {_header_difference(header, expected, names[0])}")
        frame = _read_csv(path, name, target_col, gzipped)
        if frame.empty:
            raise DataPrepError(f"{name}: has a header but no data rows")
        if unnamed:
            logger.warning(
                "%s: dropping unnamed column(s) at position %s (read as %s): probably a row "
                "index written by pandas' to_csv without index=False; a row number is not a "
                "feature. Name the column to keep it.",
                name,
                [i + 1 for i in unnamed],
                [str(frame.columns[i]) for i in unnamed],
            )
            frame = frame.drop(columns=[frame.columns[i] for i in unnamed])
        logger.info("read %d rows from %s", len(frame), name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _shown(names: list[str]) -> str:
    """Up to ``_SHOWN_COLUMNS`` names, then how many more: a message stays one short line."""
    if len(names) <= _SHOWN_COLUMNS:
        return str(names)
    return f"{names[:_SHOWN_COLUMNS]} and {len(names) - _SHOWN_COLUMNS} more"


def _header_difference(header: list[str], expected: list[str], first: str) -> str:
    known, seen = set(expected), set(header)
    extra = [c for c in header if c not in known]
    missing = [c for c in expected if c not in seen]
    if extra or missing:
        what = f"has {_shown(extra)} that it lacks, lacks {_shown(missing)}"
    else:
        what = "has the same columns in another order"
    return (
        f"header {_shown(header)} differs from {first}'s header: it {what}; "
        "every file needs the same columns in the same order"
    )


def _delimiter_hint(columns: list[str]) -> str:
    if len(columns) == 1:
        for delimiter, label in ((";", "';'"), ("\t", "tabs"), ("|", "'|'")):
            if delimiter in columns[0]:
                return f" (the header looks delimited by {label}: only ',' is read)"
    return ""


def _non_numeric_examples(column: pd.Series) -> list[object]:
    if pd.api.types.is_bool_dtype(column):
        return column.dropna().unique()[:_EXAMPLES].tolist()
    coerced = pd.to_numeric(column, errors="coerce")
    bad = coerced.isna() & column.notna()
    if bad.any():
        bad &= ~column.astype(str).str.strip().str.lower().isin(_NAN_TEXT)
    return column[bad].unique()[:_EXAMPLES].tolist()


def _as_float(column: pd.Series) -> np.ndarray:
    values = column.to_numpy()
    if values.dtype.kind in "fiu":
        return values
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    # Every value is a number (checked), but pandas kept the column as text: an integer
    # beyond int64, "nan", "1e400" next to numbers...
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _is_row_number(column: np.ndarray) -> bool:
    """True for 0, 1, 2, ... (restarting at 0 where a file ends) or 1, 2, 3, ... to the end.

    Restarts must be rare (runs of ``_ROW_NUMBER_MIN_ROWS`` on average), so a small
    cyclic feature (an hour, a weekday) is not taken for an index.
    """
    n = len(column)
    if n < _ROW_NUMBER_MIN_ROWS or column[0] not in (0.0, 1.0):
        return False
    counts_on = np.diff(column) == 1.0
    if column[0] == 1.0:
        return bool(counts_on.all())
    restarts = ~counts_on
    return bool(
        np.all(column[1:][restarts] == 0.0)
        and (int(np.count_nonzero(restarts)) + 1) * _ROW_NUMBER_MIN_ROWS <= n
    )


def _check_dropped(
    dropped: int, rows_in: int, blame: dict[str, int], max_dropped_share: float
) -> None:
    """Refuse to train on what is left when more than ``max_dropped_share`` of rows go."""
    if not dropped or dropped <= max_dropped_share * rows_in:
        return
    worst = sorted(((n, name) for name, n in blame.items() if n), reverse=True)
    shown = ", ".join(f"{name} in {n:,} rows" for n, name in worst[:5])
    more = f" and {len(worst) - 5} more columns" if len(worst) > 5 else ""
    raise DataPrepError(
        f"{dropped:,} of {rows_in:,} rows ({dropped / rows_in:.0%}) have an empty or "
        f"non-finite cell and would be dropped, more than the {max_dropped_share:.0%} allowed: "
        f"{shown}{more}; fill those cells, drop the column from the input, or raise "
        "--max-dropped-share"
    )


def data_prep(
    df: pd.DataFrame,
    target_col: str = "target",
    max_dropped_share: float = DEFAULT_MAX_DROPPED_SHARE,
) -> pd.DataFrame:
    """Validate and clean a training table.

    Returns the feature columns as float64 (original order) followed by the target,
    with rows lacking a target or holding NaN/±inf features dropped, index reset.
    More than ``max_dropped_share`` of the rows dropped is an error naming the columns.
    """
    if not 0.0 <= max_dropped_share <= 1.0:
        raise DataPrepError(f"max_dropped_share must be between 0 and 1, got {max_dropped_share}")
    columns = [str(c) for c in df.columns]
    duplicated = _duplicates(columns)
    if duplicated:
        raise DataPrepError(f"duplicate column names {_shown(duplicated)}")
    if target_col not in df.columns:
        raise DataPrepError(
            f"target column {target_col!r} not found; columns are {_shown(columns)}"
            f"{_delimiter_hint(columns)}"
        )
    if df.empty:
        raise DataPrepError("the input has zero rows")
    features = [c for c in df.columns if c != target_col]
    if not features:
        raise DataPrepError(f"no feature columns: the only column is the target {target_col!r}")

    text_columns = [
        c
        for c, dtype in zip(df.columns, df.dtypes, strict=True)
        if c != target_col
        and (not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype))
    ]
    bad = {str(c): _non_numeric_examples(df[c]) for c in text_columns}
    bad = {name: examples for name, examples in bad.items() if examples}
    if bad:
        details = "; ".join(
            f"{name!r} (e.g. {examples})" for name, examples in list(bad.items())[:_SHOWN_COLUMNS]
        )
        more = f"; and {len(bad) - _SHOWN_COLUMNS} more" if len(bad) > _SHOWN_COLUMNS else ""
        raise DataPrepError(
            f"feature columns must be numeric, these are not: {details}{more} "
            "(only an empty cell means missing)"
        )

    # One float64 matrix, column-major so each column is contiguous: filled and
    # filtered a column at a time, with no whole-table temporaries.
    rows_in = len(df)
    x = np.empty((rows_in, len(features)), dtype=np.float64, order="F")
    has_target = df[target_col].notna().to_numpy()
    complete = np.ones(rows_in, dtype=bool)
    blame = {f"target {target_col!r} empty": int(rows_in - has_target.sum())}
    j = 0
    for name, values in df.items():  # one lookup per column: a wide file has 100,000
        if name == target_col:
            continue
        column = x[:, j]
        column[:] = _as_float(values)
        if _is_row_number(column):
            raise DataPrepError(
                f"column {str(name)!r} holds the row numbers ({column[0]:.0f}, "
                f"{column[0] + 1:.0f}, {column[0] + 2:.0f}, ... in order): probably an index "
                "(pandas' reset_index, or to_csv with index_label); a row number predicts "
                "nothing: drop the column from the input"
            )
        finite = np.isfinite(column)
        blame[repr(str(name))] = int(rows_in - np.count_nonzero(finite))
        complete &= finite
        j += 1
    keep = has_target & complete
    n_out = int(keep.sum())
    dropped = rows_in - n_out
    if dropped:
        if not has_target.all():
            logger.info("dropping %d rows with a missing target", rows_in - has_target.sum())
        incomplete = int((has_target & ~complete).sum())
        if incomplete:
            logger.info("dropping %d rows with missing or infinite features", incomplete)
        _check_dropped(dropped, rows_in, blame, max_dropped_share)
        for j in range(len(features)):
            x[:n_out, j] = x[keep, j]
        x = x[:n_out]
    if not n_out:
        raise DataPrepError(
            f"no rows left after dropping rows with a missing target or features ({rows_in} in)"
        )
    out = pd.DataFrame(x, columns=features, copy=False)
    # The labels stay in pandas' (Arrow-backed) text array: a numpy copy would hold a
    # Python string per row, ~60 bytes each.
    target = df[target_col]
    out[target_col] = (target[keep] if dropped else target).array

    classes = out[target_col].unique()
    if len(classes) < 2:
        raise DataPrepError(
            f"target column {target_col!r} has a single class {classes[0]!r}: need at least 2"
        )
    logger.info("data_prep: %d rows in, %d rows out, %d features", rows_in, n_out, len(features))
    return out


def write_prepared(df: pd.DataFrame, out_dir: Path) -> Path:
    """Write ``df`` to ``out_dir/prepared.parquet`` atomically (temp name, then rename)."""
    target = out_dir / PREPARED_FILENAME
    with atomic_output(target) as tmp:
        df.to_parquet(tmp, engine="pyarrow", index=False)
    return target
