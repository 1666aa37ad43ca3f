"""CLI of the data-prep step: raw CSV(s) in, ``prepared.parquet`` out."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from data_prep import (
    DEFAULT_MAX_DROPPED_SHARE,
    DataPrepError,
    data_prep,
    list_csv_files,
    read_csvs,
    source_names,
    write_prepared,
)

logger = logging.getLogger("run_data_prep")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--input-dataset-path", type=Path, required=True, help="a CSV file or a folder of CSVs"
    )
    parser.add_argument(
        "--output-dataframe-path", type=Path, required=True, help="output folder (created)"
    )
    parser.add_argument("--target-col", default="target", help="name of the target column")
    parser.add_argument(
        "--max-dropped-share",
        type=float,
        default=DEFAULT_MAX_DROPPED_SHARE,
        help="fail when more than this share of rows has an empty or non-finite cell",
    )
    parser.add_argument(
        "--input-path",
        default="",
        help="the input as the user named it (datastore path): errors name files under it",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    args = parse_args(argv)
    try:
        files = list_csv_files(args.input_dataset_path, args.input_path)
        names = source_names(files, args.input_dataset_path, args.input_path)
        logger.info("reading %d CSV file(s) from %s", len(files), args.input_dataset_path)
        prepared = data_prep(
            read_csvs(files, target_col=args.target_col, names=names),
            target_col=args.target_col,
            max_dropped_share=args.max_dropped_share,
        )
    except DataPrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    written = write_prepared(prepared, args.output_dataframe_path)
    logger.info("wrote %d rows to %s", len(prepared), written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
