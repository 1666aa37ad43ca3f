"""Data prep on wide and on large CSVs: time by column count, peak memory against file size.

1. Wide: a CSV of 10 rows and 10k / 50k / 100k feature columns; the seconds
   ``read_csvs`` + ``data_prep`` take (in a fresh process each, so one size's
   memory does not help the next). Near-linear growth is the point.
2. Memory: a generated CSV of ``--rows`` rows x 10 float features + a text label
   (~80 MB at 1M rows; 1% of the rows miss a feature) through ``read_csvs``, ``data_prep`` and
   ``write_prepared`` in a fresh process; its peak RSS (VmHWM) after each stage,
   minus the peak once the libraries are imported, against the file's size.

    .venv/bin/python bench/data_prep_bench.py [--columns 10000 50000 100000] [--rows 1000000]
    .venv/bin/python bench/data_prep_bench.py --data-prep-dir /path/to/other/aml_steps/data_prep

``--data-prep-dir`` measures another version of the step (e.g. an export of main).
Results: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA_PREP_DIR = REPO / "aml_steps" / "data_prep"

# Run in a fresh interpreter: the stages of one data prep, with timing and VmHWM.
_CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path

def peak_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0

import pandas, pyarrow  # noqa: F401  the baseline includes the libraries
import data_prep as dp
csv, out = Path(sys.argv[2]), Path(sys.argv[3])
report = {"baseline_mib": peak_mib()}
started = time.perf_counter()
frame = dp.read_csvs([csv])
report["read_s"] = time.perf_counter() - started
report["read_mib"] = peak_mib()
prepared = dp.data_prep(frame)
report["prep_s"] = time.perf_counter() - started - report["read_s"]
report["prep_mib"] = peak_mib()
del frame
dp.write_prepared(prepared, out)
report["total_s"] = time.perf_counter() - started
report["write_mib"] = peak_mib()
print(json.dumps(report))
"""


def run_child(data_prep_dir: Path, csv: Path, out: Path) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(data_prep_dir), str(csv), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    report: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def write_wide(path: Path, columns: int, rows: int = 10) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 1000, size=(rows, columns))
    with path.open("w") as fh:
        fh.write(",".join(f"c{i}" for i in range(columns)) + ",target\n")
        for i, row in enumerate(values):
            fh.write(",".join(map(str, row)) + f",{'ab'[i % 2]}\n")


def write_tall(path: Path, rows: int, features: int = 10) -> None:
    rng = np.random.default_rng(0)
    with path.open("w") as fh:
        fh.write(",".join(f"f{i}" for i in range(features)) + ",target\n")
        step = 100_000
        for start in range(0, rows, step):
            n = min(step, rows - start)
            block = np.round(rng.normal(size=(n, features)), 4)
            labels = rng.choice(["setosa", "versicolor", "virginica"], size=n)
            # 1% of the rows miss their first feature: the rows-dropped path runs.
            lines = (
                ",".join("" if j == 0 and i % 100 == 0 else f"{v:.4f}" for j, v in enumerate(row))
                + f",{label}\n"
                for i, (row, label) in enumerate(zip(block, labels, strict=True))
            )
            fh.writelines(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, nargs="*", default=[10_000, 50_000, 100_000])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the memory CSV")
    parser.add_argument("--data-prep-dir", type=Path, default=DATA_PREP_DIR)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args(argv)
    print(f"data prep from {args.data_prep_dir}")
    with tempfile.TemporaryDirectory(prefix="data-prep-bench-") as tmp:
        folder = Path(tmp)
        if args.columns:
            print("\n| columns | CSV MB | read s | data_prep s | total s | s per 10k columns |")
            print("|---:|---:|---:|---:|---:|---:|")
        for columns in args.columns:
            csv = folder / f"wide-{columns}.csv"
            write_wide(csv, columns)
            started = time.perf_counter()
            report = run_child(args.data_prep_dir, csv, folder / f"out-{columns}")
            wall = time.perf_counter() - started
            print(
                f"| {columns:,} | {csv.stat().st_size / 1e6:.1f} | {report['read_s']:.1f} | "
                f"{report['prep_s']:.1f} | {report['total_s']:.1f} | "
                f"{report['total_s'] / columns * 10_000:.2f} |",
                f"(process {wall:.1f} s)",
            )
            csv.unlink()
        if args.skip_memory:
            return 0
        csv = folder / "tall.csv"
        write_tall(csv, args.rows)
        size_mib = csv.stat().st_size / 2**20
        report = run_child(args.data_prep_dir, csv, folder / "out-tall")
        base = report["baseline_mib"]
        print(f"\nmemory: {args.rows:,} rows x 10 features + label, CSV {size_mib:.0f} MiB")
        print(f"baseline (libraries imported): {base:.0f} MiB")
        print("| stage | seconds (cumulative) | peak RSS MiB | above baseline MiB | x file |")
        print("|---|---:|---:|---:|---:|")
        for stage, seconds, key in (
            ("read_csvs", report["read_s"], "read_mib"),
            ("data_prep", report["read_s"] + report["prep_s"], "prep_mib"),
            ("write_prepared", report["total_s"], "write_mib"),
        ):
            peak = report[key]
            print(
                f"| {stage} | {seconds:.1f} | {peak:.0f} | {peak - base:.0f} | "
                f"{(peak - base) / size_mib:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
