"""A failing step names the input as the user gave it, not the local scratch copy (issue 16, 11).

The local backend downloads inputs into `.cache/<job>-.../inputs/...` and deletes it
afterwards; an error naming that copy points nowhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.compute.base import EnvironmentRef, StepFailedError
from flows.compute.local import LocalCompute
from flows.datastore import LocalDatastore
from flows.plan import data_prep_step
from tests.conftest import TEST_CACHE_DIR

pytestmark = pytest.mark.slow


def test_data_prep_error_names_the_datastore_path(
    tmp_path: Path, step_environment: EnvironmentRef
) -> None:
    store = LocalDatastore(tmp_path / "store")
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("f1,target\n1,a\n2,b\n")
    bad.write_text("f1,target\n1,a\n1,2,3\n")
    store.upload_file(good, "raw/train/a.csv")
    store.upload_file(bad, "raw/train/sub/week1.csv")
    spec = data_prep_step("train-errors-1", "raw/train", "uri_folder", "target")
    with pytest.raises(StepFailedError) as info:
        LocalCompute(store, TEST_CACHE_DIR).run_step(spec, step_environment)
    error = [line for line in str(info.value).splitlines() if line.startswith("error:")][-1]
    assert error.startswith("error: raw/train/sub/week1.csv: ")
    assert ".cache" not in error
