"""Turn raw training CSVs into a clean, numeric feature table plus its target column.

Pure functions only, apart from the two small readers/writers at the bottom; the
CLI in ``run_data_prep.py`` wires them to the command line.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

PREPARED_FILENAME = "prepared.parquet"
_EXAMPLES = 3


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
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            message = str(exc).strip().replace("\n", " ")
            raise DataPrepError(f"{path}: cannot parse CSV: {message}") from exc
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

    bad = {
        str(c): _non_numeric_examples(df[c])
        for c in features
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])
    }
    if bad:
        details = "; ".join(f"{name!r} (e.g. {examples})" for name, examples in bad.items())
        raise DataPrepError(f"feature columns must be numeric, these are not: {details}")

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
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / PREPARED_FILENAME
    tmp = out_dir / f".{PREPARED_FILENAME}.{os.getpid()}.tmp"
    try:
        df.to_parquet(tmp, engine="pyarrow", index=False)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
