"""Benchmarks of the training pipeline, each against a baseline measured in the same run.

1. Orchestration: a cold local training run (fresh environment cache and
   datastore), a warm run (environment cached, every step forced to run) and a
   run where every step is reused, against the plain step scripts run directly
   in the same virtual env with no Prefect and no datastore (the baseline).
2. Scaling: the data-prep and train steps on generated CSVs of 10k, 100k and
   1M rows: wall time and peak memory (RSS of the step process), and how they
   grow with the row count.

    .venv/bin/python bench/pipeline_bench.py [--sizes 10000 100000 1000000]

Numbers depend on the machine; the ratios are the point. Results: BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]

SAMPLE = REPO / "data" / "sample" / "iris.csv"


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_mb: float


# Run by a small intermediate Python: fork, exec the command, report the child's
# own ru_maxrss. Linux carries a parent's peak RSS over fork + exec into the
# child's, so a child started straight from this (large) process would report
# at least this process's size; a process forked from the small intermediate
# starts from a fresh count.
_SPAWN = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Measured:
    """Run a process to completion; its wall time and its own peak RSS (see _SPAWN)."""
    with tempfile.TemporaryFile() as stderr, tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "maxrss"
        spawn = [sys.executable, "-I", "-S", "-c", _SPAWN, str(report), *argv]
        started = time.perf_counter()
        process = subprocess.run(
            spawn, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=stderr, check=False
        )
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}):\n{tail}")
        maxrss_kib = int(report.read_text())
    return Measured(seconds, maxrss_kib / 1024)


@contextmanager
def env_vars(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def step_python(cache_dir: Path) -> Path:
    envs = sorted((cache_dir / "envs").glob("*/bin/python"))
    if not envs:
        raise RuntimeError(f"no step environment under {cache_dir}/envs: run a training first")
    return envs[-1]


def baseline_steps(python: Path, csv: Path, work: Path) -> Measured:
    """The two step scripts, run directly: what the pipeline costs without orchestration."""
    prep_out, model_out = work / "prepared", work / "model"
    shutil.rmtree(work, ignore_errors=True)
    prep = run_measured(
        [
            str(python),
            "run_data_prep.py",
            "--input-dataset-path",
            str(csv),
            "--output-dataframe-path",
            str(prep_out),
        ],
        cwd=REPO / "aml_steps" / "data_prep",
    )
    train = run_measured(
        [
            str(python),
            "run_train.py",
            "--training-dataframe",
            str(prep_out),
            "--trained-model",
            str(model_out),
            "--run-id",
            "bench-baseline",
        ],
        cwd=REPO / "aml_steps" / "train",
    )
    return Measured(prep.seconds + train.seconds, max(prep.peak_rss_mb, train.peak_rss_mb))


def orchestration(tmp: Path) -> list[tuple[str, float]]:
    from prefect import flow

    from flows.settings import Settings
    from flows.train import SAMPLE_PATH, seed_sample, train

    cache, store = tmp / "cache", tmp / "datastore"
    rows: list[tuple[str, float]] = []
    with env_vars(SOMEMODEL_CACHE_DIR=str(cache), SOMEMODEL_LOCAL_DATASTORE_ROOT=str(store)):
        seed_sample(Settings())

        @flow
        def start_server() -> None:
            """Prefect's ephemeral server starts on the first flow call; time it apart."""

        started = time.perf_counter()
        start_server()
        rows.append(("Prefect ephemeral server start (once per process)", _since(started)))
        for label, force in [
            ("cold run (new env cache, new datastore)", False),
            ("warm run (env cached, steps forced to run)", True),
            ("reused run (nothing changed: no step runs)", False),
        ]:
            started = time.perf_counter()
            train(input_path=SAMPLE_PATH, force_rerun=force)
            rows.append((label, _since(started)))
    baseline = baseline_steps(step_python(cache), SAMPLE, tmp / "baseline")
    rows.append(("baseline: both step scripts run directly", baseline.seconds))
    return rows


def _since(started: float) -> float:
    return time.perf_counter() - started


def generate_csv(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centers = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
    labels = rng.integers(0, 3, size=rows)
    features = centers[labels] + rng.normal(0, 0.35, size=(rows, 4))
    frame = pd.DataFrame(
        features.round(3), columns=["sepal_length", "sepal_width", "petal_length", "petal_width"]
    )
    frame["target"] = np.array(["setosa", "versicolor", "virginica"])[labels]
    frame.to_csv(path, index=False)


def scaling(python: Path, tmp: Path, sizes: list[int]) -> list[tuple[int, float, Measured]]:
    results = []
    for rows in sizes:
        csv = tmp / f"rows-{rows}.csv"
        generate_csv(csv, rows)
        size_mb = csv.stat().st_size / 2**20
        results.append((rows, size_mb, baseline_steps(python, csv, tmp / f"run-{rows}")))
        csv.unlink()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args(argv)
    print(
        f"# machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp_name:
        tmp = Path(tmp_name)
        rows = orchestration(tmp)
        baseline = rows[-1][1]
        print("\n## 1. Orchestration overhead (bundled iris sample)\n")
        print("| run | seconds | vs baseline |")
        print("|---|---:|---:|")
        for label, seconds in rows:
            print(f"| {label} | {seconds:.1f} | {seconds / baseline:.2f}x |")
        cold, warm, reused = rows[1][1], rows[2][1], rows[3][1]
        print(
            f"\nwarm - baseline = {warm - baseline:.1f} s of orchestration per run; "
            f"a reused run takes {reused / cold:.0%} of a cold run's time "
            f"and {reused / warm:.0%} of a warm run's."
        )

        python = step_python(tmp / "cache")
        print("\n## 2. Data prep + train, plain step scripts, by input size\n")
        print("| rows | CSV MB | seconds | peak RSS MB | seconds / previous | rows/s |")
        print("|---:|---:|---:|---:|---:|---:|")
        previous = None
        for count, size_mb, measured in scaling(python, tmp, args.sizes):
            growth = f"{measured.seconds / previous:.1f}x" if previous else "-"
            print(
                f"| {count:,} | {size_mb:.1f} | {measured.seconds:.1f} | "
                f"{measured.peak_rss_mb:.0f} | {growth} | {count / measured.seconds:,.0f} |"
            )
            previous = measured.seconds
    return 0


if __name__ == "__main__":
    sys.exit(main())
