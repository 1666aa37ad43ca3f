"""Step reuse keys: equal exactly when code, environment, parameters and input data are."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from flows.compute.base import EnvironmentRef, StepResult
from flows.datastore import LocalDatastore
from flows.plan import data_prep_step
from flows.reuse import find_reusable, record, step_key

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
