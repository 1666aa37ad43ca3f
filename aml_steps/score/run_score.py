"""CLI of the score step: a trained model folder and CSV(s) in, predictions + manifest out."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from score import (
    ScoreError,
    build_drift_report,
    build_manifest,
    load_trained_model,
    read_file_list,
    score_files,
    training_profile_of,
    use_system_allocator,
)

from somemodel.artifacts import write_drift_report, write_manifest
from somemodel.profile import ProfileBuilder

logger = logging.getLogger("run_score")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model", type=Path, required=True, help="folder with model.skops + metadata.json"
    )
    parser.add_argument(
        "--input-data", type=Path, required=True, help="a CSV file or a folder of CSVs"
    )
    parser.add_argument("--predictions", type=Path, required=True, help="output folder")
    parser.add_argument("--run-id", required=True, help="the scoring run id, recorded")
    parser.add_argument("--id-column", default="id", help="input column copied to row_id")
    parser.add_argument("--chunk-size", type=int, default=20_000, help="rows per chunk")
    parser.add_argument(
        "--files",
        type=Path,
        default=None,
        help="a text file listing the CSVs of the --input-data folder to score (relative "
        "paths, one per line); default: all of them",
    )
    parser.add_argument(
        "--shard-index", type=int, default=0, help="score only this shard of the files (0-based)"
    )
    parser.add_argument(
        "--shard-count", type=int, default=1, help="how many shards the files are split into"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    args = parse_args(argv)
    use_system_allocator()
    try:
        trained = load_trained_model(args.model)
        logger.info("loaded model of run %s (sha256 %s)", trained.metadata.run_id, trained.sha256)
        training = training_profile_of(trained)
        if training is None:
            logger.info("the model has no training profile: drift is not measured")
        profile = ProfileBuilder(trained.feature_names, trained.model.classes_, training)
        inputs = score_files(
            trained,
            args.input_data,
            args.predictions,
            id_column=args.id_column,
            chunk_size=args.chunk_size,
            only=read_file_list(args.files) if args.files else None,
            shard=(args.shard_index, args.shard_count),
            profile=profile,
        )
    except ScoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    created_at = datetime.now(UTC)
    report = build_drift_report(
        run_id=args.run_id,
        trained=trained,
        training=training,
        scored=profile.profile(),
        created_at=created_at,
    )
    write_drift_report(report, args.predictions)
    for feature in report.features:
        logger.info("drift: %s PSI %.4f", feature.name, feature.psi)
    manifest = build_manifest(
        run_id=args.run_id, trained=trained, inputs=inputs, created_at=created_at
    )
    written = write_manifest(manifest, args.predictions)
    logger.info("scored %d rows; wrote %s", manifest.output_rows, written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
