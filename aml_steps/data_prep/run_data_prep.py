"""CLI of the data-prep step: raw CSV(s) in, ``prepared.parquet`` out."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from data_prep import DataPrepError, data_prep, list_csv_files, read_csvs, write_prepared

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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    args = parse_args(argv)
    try:
        files = list_csv_files(args.input_dataset_path)
        logger.info("reading %d CSV file(s) from %s", len(files), args.input_dataset_path)
        prepared = data_prep(read_csvs(files), target_col=args.target_col)
    except DataPrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    written = write_prepared(prepared, args.output_dataframe_path)
    logger.info("wrote %d rows to %s", len(prepared), written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
