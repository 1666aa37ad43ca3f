"""Turn raw training CSVs into a clean, numeric feature table plus its target column.

Pure functions only, apart from the two small readers/writers at the bottom; the
CLI in ``run_data_prep.py`` wires them to the command line.
"""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from somemodel.artifacts import atomic_output

logger = logging.getLogger(__name__)

PREPARED_FILENAME = "prepared.parquet"
_EXAMPLES = 3
# pandas' default missing-value markers (read_csv's `na_values` documentation).
_NA_TEXT = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)  # fmt: skip


class DataPrepError(ValueError):
    """The input data cannot be prepared; the message says what to fix."""


def list_csv_files(path: Path) -> list[Path]:
    """``path`` itself when it is a file, else every ``*.csv`` below it, sorted."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataPrepError(f"input path does not exist: {path}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() == ".csv")
    if not files:
        raise DataPrepError(f"no CSV files found in folder {path}")
    return files


def _read_header(path: Path) -> list[str]:
    # pandas silently renames duplicate headers ("a", "a.1"), so read the raw line.
    with path.open(newline="", encoding="utf-8") as fh:
        try:
            header = next(csv.reader(fh), None)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataPrepError(f"{path}: cannot read the CSV header: {exc}") from exc
    if not header:
        raise DataPrepError(f"{path}: file is empty (no header, no rows)")
    return header


def _read_csv(path: Path) -> pd.DataFrame:
    # index_col=False: rows with one field more than the header would otherwise make
    # pandas take the first column as the index and shift every value one column left.
    # pandas only warns that it drops the extra fields, so the warning is made an error.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, index_col=False)
    except pd.errors.ParserWarning as exc:
        raise DataPrepError(
            f"{path}: some rows have more fields than the header: check for unquoted commas"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataPrepError(f"{path}: file is empty (no header, no rows)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        message = str(exc).strip().replace("\n", " ")
        raise DataPrepError(f"{path}: cannot parse CSV: {message}") from exc
    # When pandas keeps a column as text (an integer beyond uint64 next to a float,
    # say) it leaves that column's missing-value markers as text too.
    for name in frame.columns:
        column = frame[name]
        if not pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            frame[name] = column.mask(column.isin(_NA_TEXT))
    return frame


def read_csvs(paths: list[Path]) -> pd.DataFrame:
    """Read and stack CSV files that must all have the same header."""
    if not paths:
        raise DataPrepError("no CSV files to read")
    frames: list[pd.DataFrame] = []
    expected: list[str] | None = None
    for path in paths:
        header = _read_header(path)
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise DataPrepError(f"{path}: duplicate column names {duplicated}")
        if expected is None:
            expected = header
        elif header != expected:
            raise DataPrepError(
                f"{path}: header {header} differs from {paths[0].name}'s header {expected}"
            )
        frame = _read_csv(path)
        if frame.empty:
            raise DataPrepError(f"{path}: has a header but no data rows")
        logger.info("read %d rows from %s", len(frame), path)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _non_numeric_examples(column: pd.Series) -> list[object]:
    if pd.api.types.is_bool_dtype(column):
        return column.dropna().unique()[:_EXAMPLES].tolist()
    coerced = pd.to_numeric(column, errors="coerce")
    bad = column[coerced.isna() & column.notna()]
    return bad.unique()[:_EXAMPLES].tolist()


def data_prep(df: pd.DataFrame, target_col: str = "target") -> pd.DataFrame:
    """Validate and clean a training table.

    Returns the feature columns as float64 (original order) followed by the target,
    with rows lacking a target or holding NaN/±inf features dropped, index reset.
    """
    columns = [str(c) for c in df.columns]
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise DataPrepError(f"duplicate column names {duplicated}")
    if target_col not in df.columns:
        raise DataPrepError(f"target column {target_col!r} not found; columns are {columns}")
    if df.empty:
        raise DataPrepError("the input has zero rows")
    features = [c for c in df.columns if c != target_col]
    if not features:
        raise DataPrepError(f"no feature columns: the only column is the target {target_col!r}")

    text_columns = [
        c
        for c in features
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])
    ]
    bad = {str(c): _non_numeric_examples(df[c]) for c in text_columns}
    bad = {name: examples for name, examples in bad.items() if examples}
    if bad:
        details = "; ".join(f"{name!r} (e.g. {examples})" for name, examples in bad.items())
        raise DataPrepError(f"feature columns must be numeric, these are not: {details}")

    if text_columns:
        # Every value parses as a number, but pandas kept the column as text: integers
        # beyond int64, for instance. Features become float64 anyway.
        df = df.copy()
        for c in text_columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")

    rows_in = len(df)
    no_target = df[target_col].isna()
    if no_target.any():
        logger.info("dropping %d rows with a missing target", int(no_target.sum()))
    df = df.loc[~no_target]

    x = df[features].astype(np.float64).replace([np.inf, -np.inf], np.nan)
    incomplete = x.isna().any(axis=1)
    if incomplete.any():
        logger.info("dropping %d rows with missing or infinite features", int(incomplete.sum()))
    out = x.loc[~incomplete]
    out[target_col] = df.loc[~incomplete, target_col]
    out = out.reset_index(drop=True)
    if out[target_col].dtype == object and out[target_col].map(type).nunique() > 1:
        # Files that agree on the labels' text can disagree on their type (one file's
        # "1" read as an int, another's as text): a CSV label is text, so compare as text.
        logger.info("target column %r mixes value types: using their text", target_col)
        out[target_col] = out[target_col].astype(str)
    if out.empty:
        raise DataPrepError(
            f"no rows left after dropping rows with a missing target or features ({rows_in} in)"
        )

    classes = out[target_col].unique()
    if len(classes) < 2:
        raise DataPrepError(
            f"target column {target_col!r} has a single class {classes[0]!r}: need at least 2"
        )
    logger.info("data_prep: %d rows in, %d rows out, %d features", rows_in, len(out), len(features))
    return out


def write_prepared(df: pd.DataFrame, out_dir: Path) -> Path:
    """Write ``df`` to ``out_dir/prepared.parquet`` atomically (temp name, then rename)."""
    target = out_dir / PREPARED_FILENAME
    with atomic_output(target) as tmp:
        df.to_parquet(tmp, engine="pyarrow", index=False)
    return target
