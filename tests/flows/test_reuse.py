"""Step reuse keys: equal exactly when code, environment, parameters and input data are."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from flows.compute.base import EnvironmentRef, StepOutput, StepResult, StepSpec
from flows.datastore import LocalDatastore
from flows.plan import data_prep_step
from flows.reuse import (
    BrokenOutputError,
    broken_output,
    find_reusable,
    record,
    run_or_reuse,
    step_key,
)

ENV = EnvironmentRef("somemodel-env", "abc", "/nowhere", reused=True)


@pytest.fixture
def store(tmp_path: Path) -> LocalDatastore:
    store = LocalDatastore(tmp_path / "root")
    (tmp_path / "a.csv").write_text("x,target\n1,a\n2,b\n")
    store.upload_file(tmp_path / "a.csv", "raw/a.csv")
    return store


def test_key_ignores_the_run_id(store: LocalDatastore) -> None:
    one = data_prep_step("run-one", "raw/a.csv", "uri_file", "target")
    two = data_prep_step("run-two", "raw/a.csv", "uri_file", "target")
    assert step_key(store, one, ENV) == step_key(store, two, ENV)


def test_key_changes_with_input_content(store: LocalDatastore, tmp_path: Path) -> None:
    spec = data_prep_step("run-one", "raw/a.csv", "uri_file", "target")
    before = step_key(store, spec, ENV)
    (tmp_path / "b.csv").write_text("x,target\n1,a\n3,b\n")
    store.upload_file(tmp_path / "b.csv", "raw/a.csv", overwrite=True)
    assert step_key(store, spec, ENV) != before


def test_key_changes_with_params_environment_and_code(
    store: LocalDatastore, tmp_path: Path
) -> None:
    spec = data_prep_step("run-one", "raw/a.csv", "uri_file", "target")
    base = step_key(store, spec, ENV)
    assert step_key(store, replace(spec, params={"target_col": "label"}), ENV) != base
    assert step_key(store, spec, replace(ENV, version="def")) != base
    code = tmp_path / "code"
    shutil.copytree(spec.code_dir, code, ignore=shutil.ignore_patterns("__pycache__"))
    assert step_key(store, replace(spec, code_dir=code), ENV) == base
    (code / "run_data_prep.py").write_text((code / "run_data_prep.py").read_text() + "\n# x\n")
    assert step_key(store, replace(spec, code_dir=code), ENV) != base


def test_recorded_result_is_found_while_its_outputs_exist(
    store: LocalDatastore, tmp_path: Path
) -> None:
    spec = data_prep_step("run-one", "raw/a.csv", "uri_file", "target")
    key = step_key(store, spec, ENV)
    assert find_reusable(store, spec, key) is None
    output = spec.outputs[0].path
    (tmp_path / "p.parquet").write_bytes(b"data")
    store.upload_file(tmp_path / "p.parquet", f"{output}/prepared.parquet")
    result = StepResult("data_prep", spec.job_name, "Completed", {spec.outputs[0].name: output}, "")
    record(store, spec, key, replace(result, run_id="run-one"))
    found = find_reusable(store, spec, key)
    assert found is not None
    assert found.reused
    assert found.run_id == "run-one"
    assert found.outputs == {spec.outputs[0].name: output}
    (store.root / output / "prepared.parquet").unlink()
    assert find_reusable(store, spec, key) is None


def _predictions(store: LocalDatastore, tmp_path: Path, folder: str, rows: int) -> None:
    """A predictions folder whose manifest counts 2 rows, and whose CSV holds `rows`."""
    manifest = {
        "run_id": "score-1",
        "model_run_id": "train-1",
        "model_sha256": "0" * 64,
        "inputs": [{"path": "a.csv", "rows": 2}],
        "output_rows": 2,
        "classes": ["a", "b"],
        "created_at": "2026-11-30T12:00:00+00:00",
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    lines = ["row_id,predicted_class,proba_a,proba_b", *["1,a,0.9,0.1"] * rows]
    (tmp_path / "predictions.csv").write_text("\n".join(lines) + "\n")
    store.upload_file(tmp_path / "predictions.csv", f"{folder}/predictions.csv", overwrite=True)
    store.upload_file(tmp_path / "manifest.json", f"{folder}/manifest.json", overwrite=True)


def _score_spec(tmp_path: Path) -> StepSpec:
    return StepSpec(
        step="score",
        run_id="score-1",
        code_dir=tmp_path,
        script="score.py",
        inputs=(),
        outputs=(StepOutput("predictions", "predictions/score-1"),),
    )


def test_predictions_are_checked_against_their_manifest(
    store: LocalDatastore, tmp_path: Path
) -> None:
    _predictions(store, tmp_path, "predictions/score-1", rows=2)
    assert broken_output(store, {"predictions": "predictions/score-1"}) is None
    _predictions(store, tmp_path, "predictions/score-1", rows=1)
    assert broken_output(store, {"predictions": "predictions/score-1"}) == (
        "'predictions/score-1/predictions.csv' has 1 rows, but its manifest counts 2"
    )
    store.delete_file("predictions/score-1/manifest.json")
    assert "manifest.json' is missing" in str(
        broken_output(store, {"predictions": "predictions/score-1"})
    )


def test_a_reattached_job_whose_outputs_no_longer_verify_says_to_start_a_new_run(
    store: LocalDatastore, tmp_path: Path
) -> None:
    # Azure ML keeps no completion markers: a resumed run re-attaches to its finished job.
    spec = _score_spec(tmp_path)
    _predictions(store, tmp_path, "predictions/score-1", rows=1)
    attached = StepResult(
        "score", spec.job_name, "Completed", {"predictions": "predictions/score-1"}, "", reused=True
    )
    with pytest.raises(
        BrokenOutputError,
        match=r"score-1-score finished in an earlier attempt.*has 1 rows.*start a new run",
    ):
        run_or_reuse(store, spec, ENV, lambda: attached)
    fresh = replace(attached, reused=False)
    assert run_or_reuse(store, spec, ENV, lambda: fresh).run_id == "score-1"
