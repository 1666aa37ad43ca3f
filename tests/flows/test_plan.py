"""Pure plan builders: how a scoring input is split into shard steps."""

from __future__ import annotations

import pytest

from flows.plan import merge_step, score_shard_count, score_shard_steps


@pytest.mark.parametrize(
    ("kind", "files", "shards", "min_files", "expected"),
    [
        ("uri_file", 1, 4, 1, 1),  # one file: one step
        ("uri_folder", 8, 1, 1, 1),  # sharding off (the default)
        ("uri_folder", 8, 2, 1, 2),
        ("uri_folder", 8, 4, 2, 4),
        ("uri_folder", 8, 8, 2, 4),  # at least 2 files per shard
        ("uri_folder", 3, 4, 2, 1),  # too small a folder to split
        ("uri_folder", 5, 4, 2, 2),
    ],
)
def test_score_shard_count(
    kind: str, files: int, shards: int, min_files: int, expected: int
) -> None:
    assert score_shard_count(kind, files, shards, min_files) == expected  # type: ignore[arg-type]


def test_shard_steps_and_merge() -> None:
    specs = score_shard_steps("score-run-1", "train-run-1", "raw/week", "id", 3)
    assert [s.job_name for s in specs] == [f"score-run-1-score-{k}" for k in range(3)]
    assert [s.outputs[0].path for s in specs] == [
        f"prediction_parts/score-run-1/shard-{k}" for k in range(3)
    ]
    assert {s.inputs[1].path for s in specs} == {"raw/week"}
    assert [(s.params["shard_index"], s.params["shard_count"]) for s in specs] == [
        (0, 3), (1, 3), (2, 3)
    ]  # fmt: skip
    merge = merge_step("score-run-1", ["a", "b"], 5)
    assert [(i.name, i.path) for i in merge.inputs] == [("shard_0", "a"), ("shard_1", "b")]
    assert merge.job_name == "score-run-1-score-merge"
