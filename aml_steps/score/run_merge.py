"""CLI of the merge step: the score shards' outputs in, predictions + manifest out.

python run_merge.py --shard-0 DIR --shard-1 DIR ... --predictions DIR --run-id ID
    --expected-files N
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from merge import merge_drift_reports, merge_shards
from outputs import ScoreError

from somemodel.artifacts import write_drift_report, write_manifest

logger = logging.getLogger("run_merge")
_SHARD_FLAG = re.compile(r"^--shard-(\d+)$")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # One flag per shard (`--shard-0`...), as the job's inputs are named: declared
    # from the command line itself, then required to be 0..n-1 without gaps.
    indexes = sorted({int(m.group(1)) for a in argv if (m := _SHARD_FLAG.match(a))})
    for k in indexes:
        parser.add_argument(f"--shard-{k}", type=Path, required=True, help=f"shard {k}'s output")
    parser.add_argument("--predictions", type=Path, required=True, help="output folder")
    parser.add_argument("--run-id", required=True, help="the scoring run id, recorded")
    parser.add_argument(
        "--expected-files", type=int, required=True, help="how many input CSVs were scored"
    )
    args = parser.parse_args(argv)
    if indexes != list(range(len(indexes))) or not indexes:
        parser.error(f"give --shard-0 ... --shard-N without gaps (got shards {indexes})")
    args.shards = [getattr(args, f"shard_{k}") for k in indexes]
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    args = parse_args(sys.argv[1:] if argv is None else argv)
    created_at = datetime.now(UTC)
    try:
        manifest = merge_shards(
            args.shards,
            args.predictions,
            run_id=args.run_id,
            expected_files=args.expected_files,
            created_at=created_at,
        )
        report = merge_drift_reports(args.shards, run_id=args.run_id, created_at=created_at)
    except ScoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_drift_report(report, args.predictions)
    written = write_manifest(manifest, args.predictions)
    logger.info(
        "merged %d shards: %d files, %d rows; wrote %s",
        len(args.shards),
        len(manifest.inputs),
        manifest.output_rows,
        written,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
