"""Shard steps (run_score.py --shard-index/--shard-count) and the merge step (run_merge.py)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import merge as merge_module
import pandas as pd
import pytest
import run_merge
import run_score
from score import ScoreError, shard_files

from tests.aml_steps.conftest import STEPS_DIR


@pytest.fixture
def folder(tmp_path: Path, iris_df: pd.DataFrame) -> Path:
    """A week of CSVs: nested, with and without ids, header-only, and a non-CSV file."""
    root = tmp_path / "week-48"
    (root / "shop-a").mkdir(parents=True)
    features = iris_df.drop(columns="target")
    features.iloc[:50].to_csv(root / "mon.csv", index=False)
    with_ids = features.iloc[50:110].copy()
    with_ids.insert(0, "id", [f"{i:04d}" for i in range(50, 110)])
    with_ids.to_csv(root / "shop-a" / "tue.csv", index=False)
    features.iloc[110:].to_csv(root / "shop-a-wed.csv", index=False)
    features.iloc[:0].to_csv(root / "thu.csv", index=False)
    (root / "README.txt").write_text("not data\n")
    return root


def score(model: Path, data: Path, out: Path, *shard: int) -> Path:
    argv = ["--model", str(model), "--input-data", str(data), "--predictions", str(out),
            "--run-id", "score-run-1", "--chunk-size", "7"]  # fmt: skip
    if shard:
        argv += ["--shard-index", str(shard[0]), "--shard-count", str(shard[1])]
    assert run_score.main(argv) == 0
    return out


def merge(shards: list[Path], out: Path, expected: int) -> int:
    argv = [a for k, s in enumerate(shards) for a in (f"--shard-{k}", str(s))]
    return run_merge.main(
        [*argv, "--predictions", str(out), "--run-id", "score-run-1",
         "--expected-files", str(expected)]
    )  # fmt: skip


def test_shard_files_are_contiguous_and_cover_every_file_once() -> None:
    files = [Path(f"{i}.csv") for i in range(7)]
    shards = [shard_files(files, k, 3) for k in range(3)]
    assert [len(s) for s in shards] == [2, 2, 3]
    assert [f for s in shards for f in s] == files
    assert shard_files(files, 1, 3) == shard_files(list(files), 1, 3)
    with pytest.raises(ScoreError, match="shard 3 of 3"):
        shard_files(files, 3, 3)


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_merged_shards_equal_the_plain_step_byte_for_byte(
    tmp_path: Path, trained_dir: Path, folder: Path, count: int
) -> None:
    plain = score(trained_dir, folder, tmp_path / "plain")
    shards = [score(trained_dir, folder, tmp_path / f"shard-{k}", k, count) for k in range(count)]
    assert merge(shards, tmp_path / "merged", expected=4) == 0

    merged = tmp_path / "merged"
    assert (merged / "predictions.csv").read_bytes() == (plain / "predictions.csv").read_bytes()
    plain_manifest = json.loads((plain / "manifest.json").read_text())
    merged_manifest = json.loads((merged / "manifest.json").read_text())
    plain_manifest.pop("created_at"), merged_manifest.pop("created_at")
    assert merged_manifest == plain_manifest
    assert merged_manifest["output_rows"] == 150
    rows = [len(pd.read_csv(s / "predictions.csv")) for s in shards]
    assert sum(rows) == 150
    # The drift report too: the shards' counts summed are the plain step's, bin for bin.
    plain_drift = json.loads((plain / "drift.json").read_text())
    merged_drift = json.loads((merged / "drift.json").read_text())
    plain_drift.pop("created_at"), merged_drift.pop("created_at")
    assert merged_drift == plain_drift
    assert merged_drift["status"] == "compared"
    assert merged_drift["scored_profile"]["rows"] == 150


def test_a_missing_or_unfinished_shard_fails_the_merge(
    tmp_path: Path, trained_dir: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shards = [score(trained_dir, folder, tmp_path / f"shard-{k}", k, 2) for k in range(2)]
    assert merge(shards[:1], tmp_path / "one", expected=4) == 2
    assert "scored 2 CSVs" in capsys.readouterr().err
    (shards[1] / "manifest.json").unlink()
    assert merge(shards, tmp_path / "unfinished", expected=4) == 2
    assert "shard 1" in capsys.readouterr().err
    assert not (tmp_path / "unfinished" / "manifest.json").exists()


def test_shards_of_different_models_are_refused(
    tmp_path: Path, trained_dir: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shards = [score(trained_dir, folder, tmp_path / f"shard-{k}", k, 2) for k in range(2)]
    manifest = json.loads((shards[1] / "manifest.json").read_text())
    manifest["model_sha256"] = "0" * 64
    (shards[1] / "manifest.json").write_text(json.dumps(manifest))
    assert merge(shards, tmp_path / "merged", expected=4) == 2
    assert "different models" in capsys.readouterr().err


def test_shard_flags_must_have_no_gaps(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        run_merge.parse_args(["--shard-1", "x", "--predictions", "p", "--run-id", "r",
                              "--expected-files", "1"])  # fmt: skip


def test_the_merge_step_starts_without_the_scoring_libraries() -> None:
    """The merge runs after every shard, on the fan-out's critical path: importing
    scikit-learn, skops, pandas and Arrow there would cost it 1.5-2 s of start-up.
    """
    heavy = ["sklearn", "skops", "pandas", "pyarrow"]
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import run_merge; "
        "print(' '.join(m for m in sys.argv[2:] if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe, str(STEPS_DIR / "score"), *heavy],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert found.stdout.split() == []


@pytest.mark.parametrize("kernel", ["copies", "unsupported", "stops-halfway"])
def test_the_merge_appends_the_rows_after_each_header_whatever_the_kernel_supports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str
) -> None:
    header = b"row_id,prediction\n"
    parts = [header + b"".join(b"%d-%d,a\n" % (k, i) for i in range(50_000)) for k in range(2)]
    real = os.copy_file_range

    def halfway(src: int, dst: int, count: int, offset_src: int | None = None) -> int:
        if offset_src is not None and offset_src > len(header) + 1000:
            raise OSError(errno.EXDEV, "cross-device")
        return real(src, dst, min(count, 1000), offset_src)

    def unsupported(*_: object) -> int:
        raise OSError(errno.ENOSYS, "not implemented")

    if kernel != "copies":
        monkeypatch.setattr(
            os, "copy_file_range", halfway if kernel == "stops-halfway" else unsupported
        )
    out_path = tmp_path / "merged.csv"
    with out_path.open("wb") as out:
        out.write(header)
        for k, part in enumerate(parts):
            source = tmp_path / f"part-{k}.csv"
            source.write_bytes(part)
            with source.open("rb") as handle:
                merge_module._append_rows(handle, len(header), out)
    assert out_path.read_bytes() == header + b"".join(p[len(header) :] for p in parts)
