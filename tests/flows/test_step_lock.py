"""aml_steps/requirements.lock is uv.lock's set for the steps; the MLflow lock agrees with it."""

from __future__ import annotations

from importlib.metadata import version

from flows.compute.aml_specs import TRACKING_LOCK
from flows.settings import Settings
from flows.step_lock import LOCK, STEP_LOCK, main, pinned_set, read_step_lock


def test_the_step_lock_is_what_uv_lock_resolves() -> None:
    assert read_step_lock() == tuple(pinned_set(LOCK.read_text()))
    assert main(["--check"]) == 0


def test_the_step_lock_covers_the_dependencies_of_the_step_packages() -> None:
    names = {line.split("==")[0] for line in read_step_lock()}
    # The roots, and what pinning only the roots left to chance.
    assert {"pandas", "pyarrow", "scikit-learn", "skops", "numpy"} <= names
    assert {"scipy", "joblib", "threadpoolctl", "python-dateutil"} <= names


def test_the_settings_install_the_step_lock_and_this_venv_runs_it() -> None:
    assert Settings().pip_packages == read_step_lock()
    for requirement in read_step_lock():
        name, pinned = requirement.split("==")
        assert version(name) == pinned, f"{name}: lock {pinned}, installed {version(name)}"


def test_the_mlflow_lock_agrees_with_the_step_lock() -> None:
    steps = dict(line.split("==") for line in read_step_lock(STEP_LOCK))
    tracking = dict(line.split("==") for line in read_step_lock(TRACKING_LOCK))
    assert {"mlflow-skinny", "azureml-mlflow"} <= set(tracking)
    shared = set(steps) & set(tracking)
    assert {name: tracking[name] for name in shared} == {name: steps[name] for name in shared}
