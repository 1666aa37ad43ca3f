"""Benchmark sharded scoring: a folder of CSVs scored by 1 shard against 2 shards, locally.

    .venv/bin/python bench/fanout_bench.py [--files 8] [--rows-per-file 250000] [--repeat 3]

Generates `--files` iris-like CSVs into a local datastore, trains a SomeModel on
iris, prepares the step environment (the cached venv the flows use), then
scores the folder through `LocalCompute`, as the score flow does:

- 1 shard: the plain score step over the whole folder;
- 1 shard on 1 CPU: the same, with the step pinned to one CPU (as if the
  machine were a node of one CPU);
- 2 shards: two shard steps run side by side (`run_steps`, one process each),
  then the merge step that appends their outputs.

The first row is what a 2-core machine gets from the fan-out; against the
second, the 2 shards bring one CPU each, as two AML nodes would: that is how the
fan-out scales when each shard brings room of its own. (On one machine the
scoring itself scales, but writing the predictions, which the shards and the
merge write more often than one step, and each process's start-up do not:
BENCHMARKS.md, "Sharded scoring", has the time of each phase.)

Both include the datastore copies (inputs in, outputs out) and each process's
start-up; the 2-shard time includes the merge. Besides wall time it reports the
CPU seconds of the step processes (user + system), which the machine's load
disturbs far less: the fan-out can only win wall time while the CPUs have room.
The predictions of both are checked equal byte for byte. The best of
`--repeat` runs is kept: the machine is shared, and the minimum is the least
disturbed.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "bench")]

from score_bench import generate_csv, machine, train_model  # noqa: E402

from flows.compute.base import EnvironmentRef, EnvironmentSpec  # noqa: E402
from flows.compute.local import LocalCompute  # noqa: E402
from flows.datastore import LocalDatastore  # noqa: E402
from flows.plan import merge_step, score_shard_steps, score_step  # noqa: E402
from flows.settings import Settings  # noqa: E402
from flows.wheel import SOMEMODEL_SOURCE, build_wheel  # noqa: E402

MODEL_RUN = "train-bench-1"
FOLDER = "raw/week"


def prepare(root: Path, files: int, rows: int, cache: Path) -> tuple[LocalCompute, EnvironmentRef]:
    store = LocalDatastore(root / "datastore")
    for i in range(files):
        local = root / f"day-{i}.csv"
        generate_csv(local, rows, seed=i)
        store.upload_file(local, f"{FOLDER}/day-{i}.csv")
        local.unlink()
    model_dir = root / "model"
    train_model(model_dir)
    for file in model_dir.iterdir():
        store.upload_file(file, f"trained_models/{MODEL_RUN}/{file.name}")
    wheel = build_wheel(SOMEMODEL_SOURCE, cache / "wheels")
    store.upload_file(wheel.local_path, wheel.datastore_path)
    settings = Settings()
    spec = EnvironmentSpec("somemodel-env", settings.base_image, settings.pip_packages, wheel)
    compute = LocalCompute(store, cache, max_parallel=2)
    return compute, compute.prepare_environment(spec)


_SPIN = "import time\nt = time.perf_counter()\nx = 0\nfor i in range(20_000_000): x += i\n"


def parallel_room() -> float:
    """How many CPUs the machine gives us right now: 2 spin loops side by side vs 1 alone.

    2.0 on an idle 2-core machine; near 1.0 when other work takes the CPUs.
    """

    def spin(n: int) -> float:
        started = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(n)]
        for proc in procs:
            proc.wait()
        return time.perf_counter() - started

    return 2 * spin(1) / spin(2)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# (label, shards, CPUs the steps may use: None for all)
SCENARIOS: list[tuple[str, int, int | None]] = [
    ("1 shard", 1, None),
    ("1 shard on 1 CPU", 1, 1),
    ("2 shards (+ merge)", 2, None),
]


@contextmanager
def cpus(count: int | None) -> Iterator[None]:
    """Pin this process (and so the steps it starts) to its first `count` CPUs."""
    if count is None:
        yield
        return
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(allowed)[:count])
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def score_once(
    compute: LocalCompute, env: EnvironmentRef, run_id: str, shards: int, files: int
) -> tuple[float, float]:
    """Wall seconds and the step processes' CPU seconds of one scoring of the folder."""
    cpu = _children_cpu()
    started = time.perf_counter()
    if shards == 1:
        compute.run_step(score_step(run_id, MODEL_RUN, FOLDER, "uri_folder", "id"), env)
    else:
        specs = score_shard_steps(run_id, MODEL_RUN, FOLDER, "id", shards)
        results = compute.run_steps(specs, env)
        compute.run_step(
            merge_step(run_id, [r.outputs["predictions"] for r in results], files), env
        )
    return time.perf_counter() - started, _children_cpu() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rows-per-file", type=int, default=250_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    cache = REPO_ROOT / ".cache" / "test"
    with tempfile.TemporaryDirectory(prefix="fanout-bench-") as tmp:
        root = Path(tmp)
        print(f"generating {args.files} CSVs of {args.rows_per_file:,} rows...", flush=True)
        compute, env = prepare(root, args.files, args.rows_per_file, cache)
        best: dict[str, tuple[float, float]] = {}
        loads: list[float] = []
        rooms: list[float] = []
        for repeat in range(args.repeat):
            for n, (label, shards, allowed) in enumerate(SCENARIOS):
                run_id = f"score-bench-{n}-{repeat}"
                loads.append(os.getloadavg()[0])
                if shards == 2:
                    rooms.append(parallel_room())
                with cpus(allowed):
                    seconds, cpu = score_once(compute, env, run_id, shards, args.files)
                print(
                    f"  run {repeat + 1}: {label}: {seconds:.2f} s wall, "
                    f"{cpu:.2f} s CPU (load {loads[-1]:.1f})",
                    flush=True,
                )
                if label not in best or seconds < best[label][0]:
                    best[label] = (seconds, cpu)
        store = compute.datastore
        assert isinstance(store, LocalDatastore)
        outputs = {
            (store.root / f"predictions/score-bench-{n}-0/predictions.csv").read_bytes()
            for n in range(len(SCENARIOS))
        }
        if len(outputs) != 1:
            print("error: the 1-shard and 2-shard predictions differ", file=sys.stderr)
            return 1
    total = args.files * args.rows_per_file
    print()
    print(machine())
    print(f"1-minute load average before the runs: {min(loads):.1f} to {max(loads):.1f}")
    print(
        "parallel room (2 spin loops side by side vs 1; 2.0 = two free CPUs): "
        + ", ".join(f"{room:.2f}" for room in rooms)
    )
    print(f"{args.files} CSVs, {total:,} rows; best of {args.repeat}")
    one, one_cpu = best["1 shard"][0], best["1 shard on 1 CPU"][0]
    print("| scoring | wall s | CPU s (steps) | rows/s | vs 1 shard | vs 1 shard on 1 CPU |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, _, _ in SCENARIOS:
        seconds, cpu = best[label]
        print(
            f"| {label} | {seconds:.2f} | {cpu:.2f} | {total / seconds:,.0f} "
            f"| {one / seconds:.2f}x | {one_cpu / seconds:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
