"""The parallel score entry script (init/run as AML's runtime calls them) and the merge step."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import parallel_score
import pytest
import run_merge
import run_score
from merge import read_parts
from score import ScoreError


@pytest.fixture(autouse=True)
def _fresh_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test is a new worker process: nothing loaded by an earlier init()."""
    monkeypatch.setattr(parallel_score, "_state", parallel_score._State())


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


def args(model: Path, data: Path, parts: Path, *extra: str) -> list[str]:
    return [
        "--model", str(model), "--input-data", str(data), "--parts", str(parts),
        "--id-column", "id", "--chunk-size", "7", *extra,
    ]  # fmt: skip


def run_like_aml(model: Path, data: Path, parts: Path, mini_batch_size: int) -> list[str]:
    """What AML's parallel runtime does on a worker: init() (its own args too), run() per batch."""
    parallel_score.init([*args(model, data, parts), "--logging_level", "INFO", "--output", "x"])
    files = sorted(str(p) for p in data.rglob("*") if p.is_file())
    lines = []
    for start in range(0, len(files), mini_batch_size):
        batch = files[start : start + mini_batch_size]
        result = parallel_score.run(batch)
        assert len(result) == len(batch)  # the runtime counts one result per file
        lines += result
    return lines


def plain(model: Path, data: Path, out: Path) -> Path:
    argv = ["--model", str(model), "--input-data", str(data), "--predictions", str(out),
            "--run-id", "score-run-1", "--chunk-size", "7"]  # fmt: skip
    assert run_score.main(argv) == 0
    return out


def merge(parts: Path, out: Path, expected: int) -> int:
    return run_merge.main(
        ["--parts", str(parts), "--predictions", str(out), "--run-id", "score-run-1",
         "--expected-files", str(expected)]
    )  # fmt: skip


def test_run_scores_each_file_of_a_mini_batch_into_its_own_part(
    tmp_path: Path, trained_dir: Path, folder: Path
) -> None:
    parts = tmp_path / "parts"
    lines = run_like_aml(trained_dir, folder, parts, mini_batch_size=2)
    assert lines == [
        "README.txt: skipped",
        "mon.csv: 50 rows -> " + parallel_score.part_name("mon.csv") + ".csv",
        "shop-a-wed.csv: 40 rows -> " + parallel_score.part_name("shop-a-wed.csv") + ".csv",
        "shop-a/tue.csv: 60 rows -> " + parallel_score.part_name("shop-a/tue.csv") + ".csv",
        "thu.csv: 0 rows -> " + parallel_score.part_name("thu.csv") + ".csv",
    ]
    assert len(list(parts.glob("part-*.csv"))) == len(list(parts.glob("part-*.json"))) == 4
    tue = json.loads((parts / f"{parallel_score.part_name('shop-a/tue.csv')}.json").read_text())
    meta = json.loads((trained_dir / "metadata.json").read_text())
    assert tue["path"] == "shop-a/tue.csv"
    assert tue["rows"] == 60
    assert tue["model_sha256"] == meta["model_sha256"]
    assert tue["model_run_id"] == "train-run-1"
    predictions = pd.read_csv(parts / tue["part"], dtype={"row_id": str})
    assert predictions["row_id"].tolist()[:2] == ["0050", "0051"]
    mon = pd.read_csv(parts / f"{parallel_score.part_name('mon.csv')}.csv")
    assert mon["row_id"].tolist()[:2] == ["mon.csv:0", "mon.csv:1"]


def test_merged_parts_equal_the_plain_step_output(
    tmp_path: Path, trained_dir: Path, folder: Path
) -> None:
    parts = tmp_path / "parts"
    run_like_aml(trained_dir, folder, parts, mini_batch_size=3)
    assert merge(parts, tmp_path / "merged", expected=4) == 0
    expected = plain(trained_dir, folder, tmp_path / "plain")

    merged_csv = (tmp_path / "merged" / "predictions.csv").read_bytes()
    assert merged_csv == (expected / "predictions.csv").read_bytes()
    assert len(pd.read_csv(tmp_path / "merged" / "predictions.csv")) == 150
    merged = json.loads((tmp_path / "merged" / "manifest.json").read_text())
    reference = json.loads((expected / "manifest.json").read_text())
    assert merged.pop("created_at")
    assert reference.pop("created_at")
    assert merged == reference
    assert [i["path"] for i in merged["inputs"]] == [
        "mon.csv", "shop-a/tue.csv", "shop-a-wed.csv", "thu.csv",
    ]  # fmt: skip


def test_script_run_locally_writes_the_same_parts(
    tmp_path: Path, trained_dir: Path, folder: Path
) -> None:
    run_like_aml(trained_dir, folder, tmp_path / "runtime", mini_batch_size=1)
    assert parallel_score.main(args(trained_dir, folder, tmp_path / "script")) == 0
    for part in (tmp_path / "runtime").iterdir():
        assert (tmp_path / "script" / part.name).read_bytes() == part.read_bytes()
    assert len(list((tmp_path / "script").iterdir())) == 8


def test_a_retried_mini_batch_rewrites_its_parts(
    tmp_path: Path, trained_dir: Path, folder: Path
) -> None:
    parts = tmp_path / "parts"
    run_like_aml(trained_dir, folder, parts, mini_batch_size=2)
    before = {p.name: p.read_bytes() for p in parts.iterdir() if p.suffix == ".csv"}
    parallel_score.run([str(folder / "mon.csv")])
    after = {p.name: p.read_bytes() for p in parts.iterdir() if p.suffix == ".csv"}
    assert after == before
    assert merge(parts, tmp_path / "merged", expected=4) == 0


def test_init_refuses_a_model_that_fails_its_sha256(
    tmp_path: Path, trained_dir: Path, folder: Path
) -> None:
    with (trained_dir / "model.skops").open("ab") as handle:
        handle.write(b"tampered")
    with pytest.raises(ScoreError, match="does not match its metadata"):
        parallel_score.init(args(trained_dir, folder, tmp_path / "parts"))
    with pytest.raises(ScoreError, match=r"init\(\) must run before run\(\)"):
        parallel_score.run([str(folder / "mon.csv")])
    assert not (tmp_path / "parts").exists()


def test_a_bad_file_fails_its_mini_batch(tmp_path: Path, trained_dir: Path, folder: Path) -> None:
    (folder / "bad.csv").write_text("sepal_length,sepal_width\n1,2\n")
    parallel_score.init(args(trained_dir, folder, tmp_path / "parts"))
    with pytest.raises(ScoreError, match=r"bad.csv: missing feature columns \['petal_length'"):
        parallel_score.run([str(folder / "mon.csv"), str(folder / "bad.csv")])
    assert parallel_score.main(args(trained_dir, folder, tmp_path / "again")) == 2


def test_merge_refuses_missing_parts(
    tmp_path: Path, trained_dir: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = tmp_path / "parts"
    run_like_aml(trained_dir, folder, parts, mini_batch_size=2)
    (parts / f"{parallel_score.part_name('thu.csv')}.json").unlink()
    assert merge(parts, tmp_path / "merged", expected=4) == 2
    assert "holds 3 finished parts" in capsys.readouterr().err
    assert not (tmp_path / "merged" / "predictions.csv").exists()
    assert not (tmp_path / "merged" / "manifest.json").exists()


def test_merge_refuses_parts_of_different_models(
    tmp_path: Path, trained_dir: Path, folder: Path
) -> None:
    parts = tmp_path / "parts"
    run_like_aml(trained_dir, folder, parts, mini_batch_size=2)
    meta = parts / f"{parallel_score.part_name('mon.csv')}.json"
    item = json.loads(meta.read_text())
    meta.write_text(json.dumps({**item, "model_sha256": "0" * 64}))
    with pytest.raises(ScoreError, match="scored by different models"):
        read_parts(parts, expected_files=4)


def test_merge_refuses_a_part_whose_csv_is_not_its_own(
    tmp_path: Path, trained_dir: Path, folder: Path
) -> None:
    parts = tmp_path / "parts"
    run_like_aml(trained_dir, folder, parts, mini_batch_size=2)
    (parts / f"{parallel_score.part_name('mon.csv')}.csv").write_text("row_id\nx\n")
    assert merge(parts, tmp_path / "merged", expected=4) == 2
    assert not (tmp_path / "merged" / "predictions.csv").exists()
