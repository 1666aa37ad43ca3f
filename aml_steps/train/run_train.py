"""CLI of the train step: ``prepared.parquet`` in, ``model.skops`` + ``metadata.json`` out."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from train import (
    TrainError,
    build_metadata,
    log_to_mlflow,
    read_prepared,
    train,
    write_holdout,
)

from somemodel.artifacts import save_model_file, write_metadata, write_training_profile

logger = logging.getLogger("run_train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--training-dataframe", type=Path, required=True, help="the data-prep output folder"
    )
    parser.add_argument("--trained-model", type=Path, required=True, help="output folder")
    parser.add_argument("--target-col", default="target", help="name of the target column")
    parser.add_argument("--run-id", required=True, help="the pipeline run id, recorded")
    parser.add_argument("--input-path", default="", help="original datastore input, recorded")
    parser.add_argument("--test-size", type=float, default=0.2, help="held-out fraction")
    parser.add_argument("--random-state", type=int, default=42, help="split and model seed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    args = parse_args(argv)
    try:
        df = read_prepared(args.training_dataframe)
        result = train(
            df,
            target_col=args.target_col,
            test_size=args.test_size,
            random_state=args.random_state,
        )
    except TrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The model file first, then the run is logged, then metadata.json last: a folder
    # is complete only when the whole step succeeded.
    sha256 = save_model_file(result.model, args.trained_model)
    logger.info("wrote model to %s (sha256 %s)", args.trained_model, sha256)
    if result.holdout is not None:
        write_holdout(result.holdout, args.trained_model)
    profile_file = None
    if result.profile is not None:
        profile_file = write_training_profile(result.profile, args.trained_model)
    log_to_mlflow(
        result,
        {
            "run_id": args.run_id,
            "input_path": args.input_path,
            "target_col": args.target_col,
            "test_size": args.test_size,
            "random_state": args.random_state,
            "model_sha256": sha256,
        },
    )
    metadata = build_metadata(
        result,
        run_id=args.run_id,
        input_path=args.input_path,
        target_col=args.target_col,
        model_sha256=sha256,
        created_at=datetime.now(UTC),
        profile_file=profile_file,
    )
    written = write_metadata(metadata, args.trained_model)
    logger.info("wrote %s", written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
