"""`python -m flows.report`: the last weeks of training accuracy, drift and class shares.

Read from the datastore alone (SOMEMODEL_DATASTORE: the local folder or the
blob container), without a Prefect server:

    python -m flows.report [--weeks N] [--threshold PSI]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from flows.backends import make_datastore
from flows.history import read_history
from flows.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Print the history; exit code 1 with one line on stderr when the datastore cannot be read."""
    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weeks",
        type=int,
        default=settings.history_weeks,
        help=f"how many weeks back (default: SOMEMODEL_HISTORY_WEEKS, {settings.history_weeks})",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=settings.drift_psi_threshold,
        help="PSI above which a feature drifted (default: SOMEMODEL_DRIFT_PSI_THRESHOLD, "
        f"{settings.drift_psi_threshold:g})",
    )
    args = parser.parse_args(argv)
    if args.weeks < 1 or args.threshold <= 0:
        parser.error("--weeks must be at least 1 and --threshold above 0")
    try:
        datastore = make_datastore(settings)
        history = read_history(
            datastore, now=datetime.now(UTC), weeks=args.weeks, threshold=args.threshold
        )
    except Exception as exc:  # the CLI's job: one clear line, and a non-zero exit
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Datastore: {datastore.describe()}")
    print(history.to_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
