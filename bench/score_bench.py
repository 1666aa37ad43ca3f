"""Benchmark the score step against plain `pandas.read_csv` + `predict_proba`.

    .venv/bin/python bench/score_bench.py [--rows 2000000] [--chunk-size 20000] [--repeat 3]
        [--before-step-dir DIR]   # another version's aml_steps/score, e.g. from git archive

Generates an iris-like CSV (id + 4 features) in a temp folder, trains a
SomeModel on iris (and writes its training profile), then measures in the same
run, each in a fresh subprocess:

- plain: `pandas.read_csv` of the whole file, then `model.predict_proba` on it
  (no output written);
- step:  the score step's CLI (`run_score.main`): chunked read, sha256 check,
  predict, the profile of every row against the training profile, and
  predictions.csv + drift.json + manifest.json written;
- before (with `--before-step-dir`): that version's score step on the same
  model folder without its profile (the step as it was before profiling);
- profile: the profile alone (`ProfileBuilder.add`) over `--rows` random rows
  in chunks, under tracemalloc: its peak traced memory, at this row count and
  at 10x, shows whether the profile's memory depends on the rows.

Each child reports its wall time and its own peak RSS (`VmHWM`), plus its
peak RSS once the libraries and the model are loaded, so the table shows the memory
each way of scoring needs on top of the interpreter. The best of `--repeat`
runs is kept: the machine is shared, and the minimum is the least disturbed.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STEP_DIR = REPO_ROOT / "aml_steps" / "score"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
MIB = 1024 * 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    """This process's peak RSS so far (VmHWM).

    Not ``ru_maxrss``: Linux carries the parent's peak over a fork + exec into it, and
    the parent here holds sklearn, pandas and the CSV generator (~300 MiB).
    """
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


# --- setup (parent) ----------------------------------------------------------------------


def generate_csv(path: Path, rows: int, seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv
    from sklearn.datasets import load_iris

    rng = np.random.default_rng(seed)
    iris = load_iris().data
    block = 500_000
    with pa_csv.CSVWriter(
        str(path),
        pa.schema([("id", pa.string()), *((name, pa.float64()) for name in FEATURES)]),
    ) as writer:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            values = iris[rng.integers(0, len(iris), n)] + rng.normal(0, 0.1, (n, 4))
            values = np.round(np.clip(values, 0.1, None), 1)
            ids = pc.binary_join_element_wise(
                "row-", pc.cast(pa.array(np.arange(start, start + n)), pa.string()), ""
            )
            writer.write_table(
                pa.table([ids, *(values[:, i] for i in range(4))], names=["id", *FEATURES])
            )


def train_model(model_dir: Path, with_profile: bool = True) -> None:
    """A model folder shaped like the train step's output: model.skops (+ profile.json) +
    metadata.json.
    """
    from datetime import UTC, datetime

    import pandas as pd
    from sklearn.datasets import load_iris

    from somemodel import SomeModel
    from somemodel.artifacts import write_model_artifact

    data = load_iris(as_frame=True)
    x = pd.DataFrame(data.data.to_numpy(), columns=FEATURES)
    y = data.target.map(dict(enumerate(data.target_names)))
    from somemodel.profile import training_profile

    model = SomeModel(random_state=0).fit(x, y)
    profile = training_profile(x.to_numpy().T, FEATURES, y.to_numpy(), model.classes_)
    model_dir.mkdir(parents=True)
    write_model_artifact(
        model,
        model_dir,
        run_id="bench-train",
        input_path="",
        target_col="target",
        metrics={},
        n_train=len(x),
        n_test=0,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        profile=profile if with_profile else None,
    )


# --- measurements (child) ----------------------------------------------------------------


def _warm_up(model_dir: Path) -> None:
    """Load the model and predict 3 rows, so lazy imports (narwhals...) land in the baseline."""
    import pandas as pd

    from somemodel import load_model

    model = load_model(model_dir / "model.skops")
    model.predict_proba(pd.DataFrame([[5.0, 3.0, 4.0, 1.0]] * 3, columns=FEATURES))


def measure_plain(csv: Path, model_dir: Path) -> dict[str, float]:
    import pandas as pd

    from somemodel import load_model

    _warm_up(model_dir)
    baseline = _peak_rss_mib()
    started, cpu = time.perf_counter(), _cpu_seconds()
    model = load_model(model_dir / "model.skops")
    df = pd.read_csv(csv)
    proba = model.predict_proba(df[FEATURES])
    elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "cpu_seconds": _cpu_seconds() - cpu,
        "rows": float(len(proba)),
        "baseline_mib": baseline,
        "peak_mib": _peak_rss_mib(),
        "frame_mib": df.memory_usage(deep=True).sum() / MIB,
    }


def measure_step(
    csv: Path, model_dir: Path, out: Path, chunk_size: int, step_dir: Path = STEP_DIR
) -> dict[str, float]:
    sys.path.insert(0, str(step_dir))
    import logging

    import run_score

    _warm_up(model_dir)
    baseline = _peak_rss_mib()
    logging.disable(logging.INFO)
    started, cpu = time.perf_counter(), _cpu_seconds()
    argv = ["--model", str(model_dir), "--input-data", str(csv), "--predictions", str(out)]
    argv += ["--run-id", "bench-score", "--chunk-size", str(chunk_size)]
    code = run_score.main(argv)
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    if code != 0:
        raise SystemExit(f"run_score.main exited with {code}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "rows": float(manifest["output_rows"]),
        "baseline_mib": baseline,
        "peak_mib": _peak_rss_mib(),
    }


def measure_profile(rows: int, chunk_size: int) -> dict[str, float]:
    """The profile alone over `rows` random rows: seconds, and tracemalloc's peak above the
    chunk being counted (the profile's own memory).
    """
    import tracemalloc

    import numpy as np

    from somemodel.profile import ProfileBuilder, training_profile

    rng = np.random.default_rng(0)
    sample = rng.normal(size=(4, 10_000))
    reference = training_profile(sample, FEATURES, np.array(["a"] * 10_000), ["a", "b", "c"])
    builder = ProfileBuilder(FEATURES, ["a", "b", "c"], reference)
    chunk = rng.normal(size=(4, chunk_size)) * 1.1
    predicted = rng.integers(0, 3, chunk_size)
    started = time.perf_counter()
    for _ in range(0, rows, chunk_size):
        builder.add(chunk, predicted)
    seconds = time.perf_counter() - started
    # Again under tracemalloc (which slows numpy's allocations): the memory only.
    builder = ProfileBuilder(FEATURES, ["a", "b", "c"], reference)
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    for _ in range(0, rows, chunk_size):
        builder.add(chunk, predicted)
    profile = builder.profile()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "seconds": seconds,
        "rows": float(profile.rows),
        "peak_traced_mib": (peak - base) / MIB,
        "chunk_mib": chunk.nbytes / MIB,
    }


def child(args: argparse.Namespace) -> int:
    if args.measure == "plain":
        result = measure_plain(args.csv, args.model_dir)
    elif args.measure == "profile":
        result = measure_profile(args.rows, args.chunk_size)
    elif args.measure == "before":
        result = measure_step(
            args.csv, args.model_dir, args.out, args.chunk_size, args.before_step_dir
        )
    else:
        result = measure_step(args.csv, args.model_dir, args.out, args.chunk_size)
    print(json.dumps(result))
    return 0


# --- driver (parent) ---------------------------------------------------------------------


def run_child(
    kind: str, csv: Path, model_dir: Path, out: Path, chunk_size: int, *extra: str
) -> dict:
    argv = [sys.executable, __file__, "--measure", kind, "--csv", str(csv)]
    argv += ["--model-dir", str(model_dir), "--out", str(out), "--chunk-size", str(chunk_size)]
    argv += list(extra)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{kind} measurement failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def machine() -> str:
    with open("/proc/meminfo") as handle:
        total_kib = int(handle.readline().split()[1])
    import os

    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"{total_kib / MIB:.1f} GiB RAM, Python {platform.python_version()}, "
        f"{platform.machine()} {platform.system()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--chunk-size", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--before-step-dir",
        type=Path,
        default=None,
        help="another version's score step folder, measured in the same run (no profile)",
    )
    parser.add_argument(
        "--measure", choices=["plain", "step", "before", "profile"], help=argparse.SUPPRESS
    )
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        return child(args)

    import pandas as pd
    import pyarrow
    import sklearn

    with tempfile.TemporaryDirectory(prefix="score-bench-") as tmp:
        root = Path(tmp)
        csv, model_dir = root / "input.csv", root / "model"
        bare_dir = root / "model-without-profile"
        started = time.perf_counter()
        generate_csv(csv, args.rows)
        train_model(model_dir)
        train_model(bare_dir, with_profile=False)
        print(
            f"generated {args.rows:,} rows ({csv.stat().st_size / MIB:.0f} MiB on disk) "
            f"in {time.perf_counter() - started:.1f} s"
        )
        order = ["plain", "step", *(["before"] if args.before_step_dir else [])]
        best: dict[str, dict] = {}
        for attempt in range(args.repeat):
            # Rotate the order so no side always runs on a warmer page cache.
            kinds = order[attempt % len(order) :] + order[: attempt % len(order)]
            for kind in kinds:
                extra = ["--before-step-dir", str(args.before_step_dir)] if kind == "before" else []
                result = run_child(
                    kind,
                    csv,
                    bare_dir if kind == "before" else model_dir,
                    root / f"out-{attempt}-{kind}",
                    args.chunk_size,
                    *extra,
                )
                print(
                    f"  {kind:5s} run {attempt + 1}: {result['seconds']:.2f} s wall, "
                    f"{result['cpu_seconds']:.2f} s CPU"
                )
                if kind not in best or result["seconds"] < best[kind]["seconds"]:
                    best[kind] = result
                best[kind]["peak_mib"] = max(best[kind]["peak_mib"], result["peak_mib"])

    plain, step = best["plain"], best["step"]
    root_out = Path(tempfile.gettempdir())
    if plain["rows"] != step["rows"]:
        raise SystemExit(f"row counts differ: plain {plain['rows']}, step {step['rows']}")
    frame = plain["frame_mib"]
    print()
    print(f"machine: {machine()}")
    print(
        f"pandas {pd.__version__}, pyarrow {pyarrow.__version__}, scikit-learn "
        f"{sklearn.__version__}; {args.rows:,} rows, chunk size {args.chunk_size:,}; "
        f"best of {args.repeat}; DataFrame of the whole CSV: {frame:.0f} MiB"
    )
    print()
    print(
        "| path | wall s | rows/s (wall) | throughput vs plain | CPU s | "
        "peak RSS MiB | above baseline MiB |"
    )
    print("|---|---|---|---|---|---|---|")
    named = [("plain read_csv + predict_proba", plain)]
    if "before" in best:
        named.append((f"score step before ({args.before_step_dir}), no profile", best["before"]))
    named.append(("score step with profiling (run_score)", step))
    for name, r in named:
        rate = r["rows"] / r["seconds"]
        above = r["peak_mib"] - r["baseline_mib"]
        ratio = plain["seconds"] / r["seconds"]
        print(
            f"| {name} | {r['seconds']:.2f} | {rate:,.0f} | {ratio:.0%} | "
            f"{r['cpu_seconds']:.2f} | {r['peak_mib']:.0f} | {above:.0f} |"
        )
    if "before" in best:
        before = best["before"]
        print(
            f"\nprofiling on vs before: {before['seconds'] / step['seconds']:.0%} of the "
            f"throughput (target >= 90%), {step['cpu_seconds'] - before['cpu_seconds']:+.2f} "
            f"CPU s, {step['peak_mib'] - before['peak_mib']:+.0f} MiB peak RSS"
        )
    for rows in (args.rows, 10 * args.rows):
        profiled = run_child(
            "profile", csv, model_dir, root_out, args.chunk_size, "--rows", str(rows)
        )
        print(
            f"profile alone, {rows:,} rows: {profiled['seconds']:.3f} s, tracemalloc peak "
            f"{profiled['peak_traced_mib']:.2f} MiB (the chunk counted: "
            f"{profiled['chunk_mib']:.2f} MiB)"
        )
    step_above = step["peak_mib"] - step["baseline_mib"]
    throughput = plain["seconds"] / step["seconds"]
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[:3]
    print()
    print(f"load average during the run: {' '.join(load)} (1/5/15 min)")
    print(
        f"step throughput {throughput:.0%} of plain (target >= 70%): "
        f"{'met' if throughput >= 0.7 else 'MISSED'}; step memory above baseline "
        f"{step_above:.0f} MiB vs the {frame:.0f} MiB DataFrame (target: well under): "
        f"{'met' if step_above < frame / 2 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
