"""The pull step finds the checkout from the worker's Python, wherever the worker started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import flows
from deployments.pull import ProjectNotFoundError, use_project_directory
from tests.conftest import REPO_ROOT


def test_changes_to_the_checkout_that_this_python_imports(tmp_path: Path) -> None:
    # The autouse fixture put us in a temp folder, as the worker's workspace is.
    assert Path.cwd() != REPO_ROOT
    assert use_project_directory() == {"directory": str(REPO_ROOT)}
    assert Path(os.getcwd()) == REPO_ROOT
    assert (Path.cwd() / "flows" / "train.py").is_file()


def test_refuses_a_python_that_has_the_project_installed_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path / "site-packages" / "flows" / "__init__.py"
    installed.parent.mkdir(parents=True)
    installed.touch()
    monkeypatch.setattr(flows, "__file__", str(installed))
    before = Path.cwd()
    with pytest.raises(ProjectNotFoundError, match="not a checkout"):
        use_project_directory()
    assert Path.cwd() == before
