"""CLI of the merge step: the parallel score job's parts in, predictions + manifest out."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from merge import merge_parts
from score import ScoreError

from somemodel.artifacts import write_manifest

logger = logging.getLogger("run_merge")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--parts", type=Path, required=True, help="the parallel score job's output folder"
    )
    parser.add_argument("--predictions", type=Path, required=True, help="output folder")
    parser.add_argument("--run-id", required=True, help="the scoring run id, recorded")
    parser.add_argument(
        "--expected-files", type=int, required=True, help="how many input CSVs were scored"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    args = parse_args(argv)
    try:
        manifest = merge_parts(
            args.parts,
            args.predictions,
            run_id=args.run_id,
            expected_files=args.expected_files,
            created_at=datetime.now(UTC),
        )
    except ScoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    written = write_manifest(manifest, args.predictions)
    logger.info(
        "merged %d parts, %d rows; wrote %s",
        len(manifest.inputs),
        manifest.output_rows,
        written,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
