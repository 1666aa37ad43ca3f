"""Entry script of the AML parallel score job: each input CSV into its own part file.

AML's parallel runtime imports this file on every worker process, calls
`init()` once, then `run(mini_batch)` with the paths of a few input files at a
time. The step's arguments (`--model`, `--input-data`, `--parts`,
`--id-column`, `--chunk-size`) are the job's program arguments, next to the
runtime's own on `sys.argv`.

Each file is scored by the same functions as the plain score step, into
`part-<hash of its relative path>.csv` (header included) and then
`part-<hash>.json` (path, rows, model identity and the CSV header): the JSON
marks the part finished, and a retried mini-batch rewrites the same names.
`run_merge.py` joins the parts into the one `predictions.csv`.

Run as a script, it does the same over every CSV of `--input-data`, one after
another: that is how the local backend runs the step.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from merge import PART_PREFIX
from score import (
    ScoreError,
    TrainedModel,
    csv_header,
    list_csv_files,
    load_trained_model,
    score_files,
    use_system_allocator,
)

from somemodel.artifacts import PREDICTIONS_FILENAME, atomic_write_text

logger = logging.getLogger("parallel_score")


class _State:
    """What `init()` prepares for every `run()` of the worker process."""

    trained: TrainedModel | None = None
    args: argparse.Namespace | None = None
    header: str = ""


_state = _State()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, required=True, help="folder with model.skops + metadata.json"
    )
    parser.add_argument(
        "--input-data", type=Path, required=True, help="the folder the CSVs are relative to"
    )
    parser.add_argument("--parts", type=Path, required=True, help="output folder of the parts")
    parser.add_argument("--id-column", default="id", help="input column copied to row_id")
    parser.add_argument("--chunk-size", type=int, default=20_000, help="rows per chunk")
    # The parallel runtime passes its own arguments too: they are not ours to refuse.
    args, _ = parser.parse_known_args(argv)
    return args


def part_name(relative: str) -> str:
    """A part's file stem: stable for the input file, unique across the folder."""
    return PART_PREFIX + hashlib.sha256(relative.encode()).hexdigest()[:24]


def init(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments, verify the model's sha256 against its metadata, load it once."""
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    args = parse_args(sys.argv[1:] if argv is None else argv)
    use_system_allocator()
    trained = load_trained_model(args.model)
    args.parts.mkdir(parents=True, exist_ok=True)
    _state.trained = trained
    _state.args = args
    _state.header = csv_header(trained.model.classes_).decode("utf-8")
    logger.info("loaded model of run %s (sha256 %s)", trained.metadata.run_id, trained.sha256)


def _base(path: Path, root: Path) -> Path:
    """The folder `path`'s name is taken relative to: the data root, as the plain step does."""
    if path.is_relative_to(root):
        return root
    # Not under the data root AML resolved for us: the name still identifies the file.
    logger.warning("%s is not under %s: naming it by its file name", path, root)
    return path.parent


def score_one(path: Path) -> dict[str, Any]:
    """Score one CSV into its part file + part JSON; return the JSON's content."""
    trained, args = _state.trained, _state.args
    if trained is None or args is None:
        raise ScoreError("init() must run before run(): the parallel runtime calls it first")
    base = _base(path, args.input_data)
    stem = part_name(path.relative_to(base).as_posix())
    with tempfile.TemporaryDirectory(prefix=f"{stem}-") as tmp:
        (summary,) = score_files(
            trained,
            path,
            Path(tmp),
            id_column=args.id_column,
            chunk_size=args.chunk_size,
            base=base,
        )
        # Scored on local disk, then moved: the output folder may be a blob mount.
        shutil.move(str(Path(tmp) / PREDICTIONS_FILENAME), args.parts / f"{stem}.csv")
    part = {
        "path": summary.path,
        "rows": summary.rows,
        "part": f"{stem}.csv",
        "model_run_id": trained.metadata.run_id,
        "model_sha256": trained.sha256,
        "classes": list(trained.metadata.classes),
        "header": _state.header,
    }
    atomic_write_text(args.parts / f"{stem}.json", json.dumps(part, indent=2) + "\n")
    return part


def run(mini_batch: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Score each CSV of the mini-batch; one result line per file, as the runtime counts them.

    A file that fails raises: the runtime retries the mini-batch, then fails
    the job (error threshold 0), since predictions must cover every input row.
    Files that are not CSVs are passed over (the plain step ignores them too).
    """
    results = []
    for item in mini_batch:
        path = Path(item)
        if path.suffix.lower() != ".csv":
            logger.info("%s: not a CSV file, skipped", path)
            results.append(f"{path.name}: skipped")
            continue
        part = score_one(path)
        logger.info("scored %d rows from %s into %s", part["rows"], part["path"], part["part"])
        results.append(f"{part['path']}: {part['rows']} rows -> {part['part']}")
    return results


def main(argv: list[str] | None = None) -> int:
    """The parallel job on one process: `init()`, then `run()` over every CSV in turn."""
    try:
        init(argv)
        args = _state.args
        if args is None:
            raise ScoreError("init() did not parse the arguments")
        for path in list_csv_files(args.input_data):
            for line in run([path]):
                print(line)
    except ScoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
